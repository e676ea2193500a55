"""Plain text from a MediaWiki XML dump (`.xml.bz2`), standard library only.

`articles` streams the main-namespace pages that are not redirects;
`plain` turns their wikitext into prose with a few regular expressions,
in this order:

  1. comments `<!-- -->`, `<ref>...</ref>` / `<ref/>` footnotes and the
     contents of `<math>`, `<gallery>`, `<timeline>`, `<score>`, `<source>`,
     `<syntaxhighlight>` blocks go;
  2. templates `{{...}}` (infoboxes, citations, navboxes) and tables
     `{| ... |}` go, nested ones included (innermost first), but for the
     few that hold prose: `{{lang|grc|text}}`, `{{lang-xx|text}}`,
     `{{transl|...|text}}` keep their text, `{{nowrap|text}}`,
     `{{small|text}}`, `{{nihongo|text|...}}`, `{{flag|text}}` their first
     argument, `{{convert|5|km|...}}` becomes `5 km`;
  3. links `[[target|label]]` become `label`, `[[target]]` becomes
     `target`; links that show no text inline (`[[File:...]]`,
     `[[Category:...]]`, the other languages' `[[de:...]]`) go, captions
     and all; external links `[http://x label]` become `label`;
  4. the remaining HTML tags go (their text stays), then HTML entities
     (`&nbsp;`, `&ndash;`) are decoded;
  5. bold/italic quotes, heading `=` signs, list bullets `*#:;` at line
     starts and behaviour switches (`__NOTOC__`) go; whitespace is tidied
     (lines stripped, at most one blank line between paragraphs).

It is a cleaner for language-model text, not a parser: a construct it does
not know is left as text, and stray `{{ }} [[ ]]` of unbalanced markup are
dropped last so that none is left.
"""
import bz2
import html
import re
import xml.etree.ElementTree as ET

_COMMENT = re.compile(r'<!--.*?(-->|$)', re.S)
_REF = re.compile(r'<ref[^>/]*/>|<ref[^>]*>.*?</ref\s*>', re.S | re.I)
_BLOCKS = re.compile(r'<(math|gallery|timeline|score|source|syntaxhighlight)'
                     r'\b[^>]*>.*?</\1\s*>', re.S | re.I)
_TEMPLATE = re.compile(r'\{\{(?:(?!\{\{|\}\}).)*\}\}', re.S)
_TABLE = re.compile(r'\{\|(?:(?!\{\||\|\}).)*\|\}', re.S)
_LINK = re.compile(r'\[\[((?:(?!\[\[|\]\]).)*)\]\]', re.S)
_EXTERNAL = re.compile(r'\[(?:https?:|ftp:)?//[^\s\]]*\s*([^\]]*)\]')
_TAG = re.compile(r'</?[a-zA-Z][^<>]*>')
_QUOTES = re.compile(r"'{2,}")
_HEADING = re.compile(r'^(=+)\s*(.*?)\s*\1\s*$', re.M)
_BULLET = re.compile(r'^[*#:;]+\s*', re.M)
_SWITCH = re.compile(r'__[A-Z]+__')
_STRAY = re.compile(r'\{\{|\}\}|\[\[|\]\]|\{\||\|\}')
# Links that show no text inline: files, categories, other languages'
# versions of the page (a leading ':' makes them inline links).
_HIDDEN = re.compile(r'^\s*(file|image|media|category|'
                     r'(?-i:[a-z]{2,3}(-[a-z]+)?))\s*:', re.I)


def _repeat(pattern: re.Pattern, repl, text: str) -> str:
  """Substitutes until nothing matches (nested markup, innermost first)."""
  while True:
    text, n = pattern.subn(repl, text)
    if not n:
      return text


def _template(m: re.Match) -> str:
  name, *args = m.group(0)[2:-2].split('|')
  name = name.strip().lower()
  args = [a.strip() for a in args if '=' not in a]
  if not args:
    return ''
  if name in ('lang', 'transl') or name.startswith('lang-'):
    return args[-1]
  if name in ('nowrap', 'small', 'nihongo', 'flag'):
    return args[0]
  return ' '.join(args[:2]) if name == 'convert' else ''


def _link(m: re.Match) -> str:
  target, _, label = m.group(1).partition('|')
  if _HIDDEN.match(target):
    return ''
  return (label.rsplit('|', 1)[-1] if label else target.lstrip(':')).strip()


def plain(wikitext: str) -> str:
  """The prose of one article's wikitext (see the module docstring)."""
  t = _COMMENT.sub('', wikitext)
  t = _REF.sub('', t)
  t = _BLOCKS.sub('', t)
  t = _repeat(_TEMPLATE, _template, t)
  t = _repeat(_TABLE, '', t)
  t = _repeat(_LINK, _link, t)
  t = _EXTERNAL.sub(r'\1', t)
  t = _TAG.sub('', t)
  t = html.unescape(t).replace('\xa0', ' ')
  t = _QUOTES.sub('', t)
  t = _HEADING.sub(r'\2', t)
  t = _BULLET.sub('', t)
  t = _SWITCH.sub('', t)
  t = _STRAY.sub('', t)
  lines = [' '.join(line.split()) for line in t.split('\n')]
  return re.sub(r'\n{3,}', '\n\n', '\n'.join(lines)).strip()


def articles(path: str):
  """(title, wikitext) of each main-namespace page of the dump at `path`
  that is not a redirect, in file order."""
  with bz2.open(path, 'rb') as f:
    for _, page in ET.iterparse(f):
      if _local(page.tag) != 'page':
        continue
      fields = {_local(e.tag): e for e in page.iter()}
      if (fields['ns'].text == '0' and 'redirect' not in fields
          and fields.get('text') is not None and fields['text'].text):
        yield fields['title'].text, fields['text'].text
      page.clear()


def _local(tag: str) -> str:
  """'page' of '{http://www.mediawiki.org/xml/export-0.10/}page'."""
  return tag.rsplit('}', 1)[-1]

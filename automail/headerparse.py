"""Fast, strict reading of the common header forms; anything else is left to the email package.

The email package's header registry costs about 1 ms per address header, which made it most of the
time of ``automail enqueue`` and of a mail merge (issue 12).  The functions here read only the forms
that ordinary programs write — ``addr``, ``Name <addr>``, ``"Quoted, Name" <addr>``, RFC 2047
encoded-words, comma-separated lists, plain unstructured text — and give exactly the result the
email package gives for them.  For anything else (groups, comments, quoted pairs, obsolete forms,
odd white space, a doubtful encoded-word) they return None and the caller uses the email package,
so the gate's verdict never depends on which path read a header.  tests/test_headerparse.py runs a
large table of tricky values through both paths.
"""

from __future__ import annotations

import functools
import re

# atext (RFC 5322 3.2.3) as the email package reads it: anything but specials, white space and
# controls; non-ASCII letters included (RFC 6532).  C1 controls are left out; so are the line
# separators U+2028/U+2029 and every other white space, but by _ODD_SPACE_RE before any matching:
# a class of characters below U+0100 only compiles in a quarter of the time (~3 ms of each CLI start).
_ATEXT = r"[^\x00-\x20\x7f-\x9f()<>\[\]:;@\\,.\"]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_ADDR_SPEC = rf"({_DOT_ATOM})@({_DOT_ATOM})"
# A display-name word: an atom, or a quoted string of plain text with single inner spaces.
_WORD = rf'(?:{_ATEXT}+|"[^"\\\x00-\x20\x7f-\x9f]+(?: [^"\\\x00-\x20\x7f-\x9f]+)*")'
_MAILBOX_RE = re.compile(rf"[ \t]*(?:({_WORD}(?:[ \t]+{_WORD})*)?[ \t]*<{_ADDR_SPEC}>|{_ADDR_SPEC})[ \t]*(,|$)")
_PHRASE_WORD_RE = re.compile(r'"[^"]*"|[^ \t]+')
# Encoded text that the email package splits off at the same "?=" as the standard does.
_ENCODED_WORD_RE = re.compile(r"=\?[^?\s]+\?(?:[bB]\?[A-Za-z0-9+/]*={0,2}|[qQ]\?(?:[^?\s=]|=[0-9A-Fa-f]{2})*)\?=")
# White space other than SP and TAB: the email package's folding white space swallows it (str.lstrip).
_ODD_SPACE_RE = re.compile(r"[^\S \t]")
# Decoded text that the email package would split or flag: controls, white space runs, tabs.
_PLAIN_DECODED_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]|  |[^\S ]")
_SPACE_RUN_RE = re.compile(r"([ \t]+)")


def _decode_word(word: str) -> str | None:
    """An encoded-word's text, or None when the email package would flag it or split its text."""
    if _ENCODED_WORD_RE.fullmatch(word) is None:
        return None
    # The email package's own RFC 2047 decoder (the same text), imported only when a message has an
    # encoded-word: with its base64 and email.errors it is ~2 ms of each CLI start.
    from email import _encoded_words as ew  # type: ignore[attr-defined]

    try:
        text: str
        text, _charset, _lang, defects = ew.decode(word)
    except (ValueError, KeyError):
        return None
    if defects or _PLAIN_DECODED_RE.search(text):
        return None
    try:
        text.encode("utf-8")  # undecodable bytes come back as surrogates
    except UnicodeEncodeError:
        return None
    return text


def _display_name(phrase: str, spaced: bool) -> str | None:
    """The display name the email package makes of a phrase: words joined by one space, decoded.

    ``spaced``: white space follows the phrase (before the ``<``).
    """
    words = _PHRASE_WORD_RE.findall(phrase)
    values = []
    for i, word in enumerate(words):
        if "=?" in word:
            # An encoded-word must be a whole word followed by white space (else the parser flags it).
            if word.startswith('"') or (i == len(words) - 1 and not spaced):
                return None
            text = _decode_word(word)
            if text is None:
                return None
            values.append(text)
        else:
            values.append(word[1:-1] if word.startswith('"') else word)
    return " ".join(values)


def address_list(value: str) -> tuple[tuple[str, str], ...] | None:
    """(display name, addr-spec) pairs of a plain address list, or None: use the email package."""
    if not value or _ODD_SPACE_RE.search(value):
        return None
    result = []
    pos = 0
    end = len(value)
    while True:
        match = _MAILBOX_RE.match(value, pos)
        if match is None:
            return None
        phrase, local, domain, bare_local, bare_domain, comma = match.groups()
        if local is None:
            local, domain = bare_local, bare_domain
        if phrase is None:
            name = ""
        else:
            display = _display_name(phrase, match.end(1) < match.start(2) - 1)
            if display is None:
                return None
            name = display
        if "=?" in local or "=?" in domain:  # the parser may read an encoded-word there
            return None
        result.append((name, f"{local}@{domain}"))
        pos = match.end()
        if not comma:
            return tuple(result) if pos == end else None
        if pos == end:  # a trailing comma: obsolete syntax
            return None


@functools.cache
def _is_unstructured(name: str) -> bool:
    from email import headerregistry  # on first use: most messages never get here (CLI start-up)

    cls = headerregistry.HeaderRegistry().registry.get(name.lower(), headerregistry.UnstructuredHeader)
    return cls in (headerregistry.UnstructuredHeader, headerregistry.UniqueUnstructuredHeader)


def unstructured(name: str, value: str) -> str | None:
    """The decoded text of an unstructured header (Subject, X-…) with encoded-words, or None.

    None: the header has a structure of its own, or the value holds something unusual.
    """
    if not _is_unstructured(name) or _ODD_SPACE_RE.search(value):
        return None
    parts = _SPACE_RUN_RE.split(value)  # text, space, text, … (an empty text first/last at an edge)
    out: list[str] = []
    previous_encoded = False
    for i in range(0, len(parts), 2):
        text = parts[i]
        encoded = "=?" in text
        if encoded:
            decoded = _decode_word(text)
            if decoded is None:
                return None
            text = decoded
        if i:
            # White space between two encoded-words is not part of the text (RFC 2047 6.2).
            out.append("" if encoded and previous_encoded else parts[i - 1])
        out.append(text)
        previous_encoded = encoded
    return "".join(out)

"""The grammar's allowed tokens without a pass over the whole vocabulary: a walk over the
vocabulary's prefix forest (docs/benchmarks.md, "Grammar-constrained decoding").

Why it is exact. llama.cpp's grammar (llama-grammar.cpp, ``llama_grammar_apply_impl``) judges
a token by its piece (the vocabulary's ``token_to_piece`` cache: special tokens rendered,
nothing stripped): end-of-generation tokens are allowed iff the grammar can end, an empty piece
or one starting with a NUL byte is always refused, and any other piece is decoded as UTF-8
(continuing the grammar's partial character) and matched code point by code point. From a
character boundary, a prefix of an allowed piece that also ends on a character boundary is
allowed: its code points are the first ones of the piece's, and a piece that ends on a
boundary has no partial character to be judged. So each token hangs below the token whose
piece is its longest proper prefix ending on a character boundary; a token whose parent is
refused is refused too, and the walk only looks at the children of the tokens the grammar
allowed, level by level.

A prefix ending inside a character is no parent: llama.cpp judges a partial character by the
range of code points it could complete to, and a negated class with a non-ASCII character
(``[^é]``) refuses the partial ``\xc3`` (its range holds é) while it allows ``à``
(``\xc3\xa0``): on SmolLM2 65 allowed tokens hung below refused partial bytes. The other
cases kept out: end-of-generation tokens (judged by the grammar's end, not their text: checked
with the roots), a grammar state inside a character (only pieces starting with a continuation
byte can match: those are checked flat), and grammars naming tokens (``<[id]>``, ``<token>``:
matched by id, not text; :func:`grammar_names_tokens` tells the sampler to keep the full
pass).
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported when a grammar is first used (tests/test_import_hygiene)
    import numpy as np

TOKEN_DATA = [("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]
"""``llama_token_data`` as a numpy record (int32, float, float: 12 bytes, no padding)."""

_LEAD_LEN = (1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 2, 2, 3, 4)
"""llama-grammar.cpp's ``decode_utf8`` table: sequence length by the lead byte's high nibble
(0: a continuation byte, invalid as a lead; F8-FF count as 4-byte leads there)."""


def utf8_remain(piece: bytes, n_remain: int) -> int:
    """The grammar's ``partial_utf8.n_remain`` after ``piece`` (llama-grammar.cpp's
    ``decode_utf8``, which stops at a NUL byte): bytes still owed by a partial character, 0
    on a character boundary, -1 for an invalid sequence."""
    i, n = 0, len(piece)
    while i < n and piece[i] != 0 and n_remain > 0:
        if piece[i] >> 6 != 2:
            return -1
        i += 1
        n_remain -= 1
    while i < n and piece[i] != 0:
        n_remain = _LEAD_LEN[piece[i] >> 4] - 1
        if n_remain < 0:
            return -1
        i += 1
        while i < n and piece[i] != 0 and n_remain > 0:
            i += 1
            n_remain -= 1
    return n_remain


def grammar_names_tokens(grammar: str) -> bool:
    """Whether a GBNF grammar has a token element (``<[id]>``, ``<token>``, ``!<...>``):
    a ``<`` outside string literals, character classes and comments (llama-grammar.cpp's
    parser reads a token there)."""
    i, n = 0, len(grammar)
    while i < n:
        c = grammar[i]
        if c == "<":
            return True
        if c == "#":
            while i < n and grammar[i] not in "\r\n":
                i += 1
        elif c in '"[':
            close = '"' if c == '"' else "]"
            i += 1
            while i < n and grammar[i] != close:
                i += 2 if grammar[i] == "\\" else 1
        i += 1
    return False


@dataclass(frozen=True)
class VocabForest:
    """A vocabulary's pieces as a prefix forest (CSR children), built once per vocabulary."""

    n_vocab: int
    roots: np.ndarray
    """Token ids checked first: pieces with no token as a proper prefix ending on a character
    boundary, and every end-of-generation token."""
    child_start: np.ndarray
    """``children[child_start[t]:child_start[t + 1]]``: the tokens whose longest proper
    prefix token (ending on a character boundary) is ``t``."""
    children: np.ndarray
    continuations: np.ndarray
    """Tokens checked while the grammar is inside a character: pieces starting with a
    continuation byte, and the end-of-generation tokens."""
    pieces: tuple[bytes, ...]
    eog: frozenset[int]


def token_pieces(vocab: Any, n_vocab: int) -> list[bytes]:
    """Every token's piece exactly as llama.cpp's grammar sees it (``token_to_piece`` with
    special tokens rendered and nothing stripped, as the vocabulary's piece cache)."""
    import llama_cpp as L

    out: list[bytes] = []
    buf = ctypes.create_string_buffer(256)
    for t in range(n_vocab):
        n = L.llama_token_to_piece(vocab, t, buf, len(buf), 0, True)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(vocab, t, big, len(big), 0, True)
            out.append(big.raw[:n])
        else:
            out.append(buf.raw[:n])
    return out


def build_forest(pieces: list[bytes], eog: set[int]) -> VocabForest:
    """The forest of ``pieces`` (``eog``: the end-of-generation token ids)."""
    import numpy as np

    n_vocab = len(pieces)
    # tokens the grammar always refuses (empty piece, NUL first) are nowhere in the walk
    live = [t not in eog and bool(p) and p[0] != 0 for t, p in enumerate(pieces)]
    # parents: pieces that end on a character boundary (ASCII ones always do)
    by_piece: dict[bytes, int] = {}
    for t, p in enumerate(pieces):
        if live[t] and (p.isascii() or utf8_remain(p, 0) == 0):
            by_piece.setdefault(p, t)
    parent = np.full(n_vocab, -1, dtype=np.int64)
    roots: list[int] = sorted(eog)
    for t, p in enumerate(pieces):
        if not live[t]:
            continue
        get = by_piece.get
        for cut in range(len(p) - 1, 0, -1):
            up = get(p[:cut])
            if up is not None:
                parent[t] = up
                break
        else:
            roots.append(t)
    has_parent = np.flatnonzero(parent >= 0)
    order = has_parent[np.argsort(parent[has_parent], kind="stable")]
    counts = np.bincount(parent[has_parent], minlength=n_vocab)
    child_start = np.zeros(n_vocab + 1, dtype=np.int64)
    np.cumsum(counts, out=child_start[1:])
    cont = [t for t, p in enumerate(pieces) if live[t] and 0x80 <= p[0] < 0xC0]
    return VocabForest(
        n_vocab=n_vocab,
        roots=np.array(sorted(set(roots)), dtype=np.int32),
        child_start=child_start,
        children=order.astype(np.int32),
        continuations=np.array(sorted(set(cont) | eog), dtype=np.int32),
        pieces=tuple(pieces),
        eog=frozenset(eog),
    )


_FORESTS: dict[int, tuple[tuple[Any, ...], VocabForest]] = {}
_LOCK = threading.Lock()
KEEP_FORESTS = 4
"""Vocabularies whose forest stays cached (a 128k one holds ~10 MB): a worker that swaps
models builds a new one per model, and the oldest goes."""


def _fingerprint(vocab: Any, n_vocab: int) -> tuple[Any, ...]:
    """Enough of a vocabulary to tell it from another one freed and loaded at the same address
    (the cache's key is the vocab pointer): its size, special ids and 257 spread pieces."""
    import llama_cpp as L

    step = max(1, n_vocab // 256)
    buf = ctypes.create_string_buffer(256)
    picks = []
    for t in (*range(0, n_vocab, step), n_vocab - 1):
        n = L.llama_token_to_piece(vocab, t, buf, len(buf), 0, True)
        picks.append(buf.raw[: max(n, 0)] if n >= 0 else n)
    specials = (L.llama_vocab_bos(vocab), L.llama_vocab_eos(vocab), L.llama_vocab_eot(vocab))
    return (n_vocab, L.llama_vocab_type(vocab), specials, tuple(picks))


def vocab_forest(vocab: Any, n_vocab: int) -> VocabForest:
    """The forest of a loaded vocabulary (cached per vocabulary: building it reads every
    piece, ~0.3 s for 128k tokens)."""
    import llama_cpp as L

    key = ctypes.cast(vocab, ctypes.c_void_p).value or 0
    mark = _fingerprint(vocab, n_vocab)
    with _LOCK:
        hit = _FORESTS.get(key)
        if hit is not None and hit[0] == mark:
            return hit[1]
        pieces = token_pieces(vocab, n_vocab)
        eog = {t for t in range(n_vocab) if L.llama_vocab_is_eog(vocab, t)}
        forest = build_forest(pieces, eog)
        _FORESTS.pop(key, None)
        _FORESTS[key] = (mark, forest)
        while len(_FORESTS) > KEEP_FORESTS:
            del _FORESTS[next(iter(_FORESTS))]
        return forest


class GrammarWalk:
    """The allowed set of one grammar sampler's current state, walked over a
    :class:`VocabForest`; :meth:`accepted` follows the grammar's partial UTF-8 character."""

    def __init__(self, grammar: Any, forest: VocabForest) -> None:
        import llama_cpp as L
        import numpy as np

        self._L = L
        self.grammar = grammar
        self.forest = forest
        self._buf = np.zeros(forest.n_vocab, dtype=TOKEN_DATA)
        self._arr = L.llama_token_data_array(
            self._buf.ctypes.data_as(L.llama_token_data_p), 0, -1, False
        )
        self.n_remain = 0
        """The grammar's ``partial_utf8.n_remain``: > 0 inside a character."""
        self.checked = 0
        """Candidates the walks handed to the grammar (since the last reset)."""

    def reset(self) -> None:
        self.n_remain = 0
        self.checked = 0

    def accepted(self, token: int) -> None:
        """Follow the grammar over an accepted token (an end-of-generation token leaves its
        partial character alone, as ``llama_grammar_accept_impl`` returns before decoding)."""
        if token not in self.forest.eog:
            self.n_remain = utf8_remain(self.forest.pieces[token], self.n_remain)

    def check(self, ids: np.ndarray) -> np.ndarray:
        """The ones of ``ids`` the grammar allows now (one ``llama_sampler_apply``)."""
        import numpy as np

        n = len(ids)
        if n == 0:
            return ids
        buf, arr = self._buf, self._arr
        view = buf[:n]
        view["id"], view["logit"] = ids, 0.0
        arr.size, arr.selected, arr.sorted = n, -1, False
        self._L.llama_sampler_apply(self.grammar, ctypes.byref(arr))
        self.checked += n
        return ids[view["logit"] != -np.inf]

    def first(self) -> np.ndarray:
        """The first level's survivors (inside a character: the only level)."""
        forest = self.forest
        return self.check(forest.continuations if self.n_remain > 0 else forest.roots)

    def rest(self, survivors: np.ndarray) -> np.ndarray:
        """Every allowed token, sorted by id, from the first level's ``survivors``."""
        import numpy as np

        if self.n_remain > 0:
            return survivors
        start, children = self.forest.child_start, self.forest.children
        found = [survivors]
        level = survivors
        while level.size:
            lo, hi = start[level], start[level + 1]
            counts = hi - lo
            total = int(counts.sum())
            if total == 0:
                break
            # the concatenation of children[lo:hi] for every survivor, without a Python loop
            shift = np.repeat(lo - np.cumsum(counts) + counts, counts)
            level = self.check(children[shift + np.arange(total)])
            found.append(level)
        allowed = np.concatenate(found)
        allowed.sort()
        return allowed

"""The public export's leak check searches all tokens in one pass over the bytes (Aho-Corasick).

It must give the verdicts of the plain per-token search it replaced: the same tokens found in the same
order, with the same rules for what counts as a reference (module documentation of
pipeline.release.access), also for a reference cut by a block edge and with thousands of tokens.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.release import access
from pipeline.release.access import _FILE_NAME, _WORD, LeakMatcher, find_leaks


def naive_search(tokens: list[str], names: list[str], text: str, *, with_names: bool) -> list[str]:
    """The former check: every token searched separately through the whole text (`bytes.find`)."""
    data = text.encode()
    check = [(t, _FILE_NAME if ("/" in t or "." in t) else _WORD) for t in sorted(set(tokens))]
    if with_names:
        check += [(n, _WORD) for n in sorted(set(names))]
    out = []
    for t, left in check:
        b = t.encode()
        i = data.find(b)
        while i >= 0:
            j = i + len(b)
            if (i == 0 or data[i - 1] not in left) and (
                b.endswith(b"/") or j == len(data) or data[j] not in _WORD
            ):
                out.append(t)
                break
            i = data.find(b, i + 1)
    return out


def _many_tokens(n: int, seed: int = 7) -> tuple[list[str], list[str]]:
    """`n` tokens shaped like the real ones (folders, tile paths, file names, input paths, hashes), some
    prefixes or suffixes of others, and a few layer names."""
    rnd = random.Random(seed)
    tokens = {"panoramas/", "mobile_points/", "change/"}
    while len(tokens) < n:
        kind = rnd.randrange(5)
        if kind == 0:
            tokens.add(f"panoramas/img_{rnd.randrange(10**5):05d}.jpg")
        elif kind == 1:
            tokens.add(f"mobile_points/{rnd.randrange(9)}/{rnd.randrange(99)}_{rnd.randrange(99)}.pnts")
        elif kind == 2:
            tokens.add(f"img_{rnd.randrange(10**5):05d}.jpg")
        elif kind == 3:
            tokens.add(f"{rnd.getrandbits(256):064x}")
        else:
            tokens.add(f"raw/mobile/scan_{rnd.randrange(10**4)}.laz")
    return sorted(tokens), ["panoramas", "mobile_points", "change"]


TOKENS, NAMES = _many_tokens(5000)


@pytest.mark.parametrize("block", [16, 64, 97])
def test_a_token_across_a_block_edge_is_found(tmp_path, monkeypatch, block):
    """A token cut by the edge of a read block is found, wherever the edge cuts it."""
    token = "panoramas/img_04711.jpg"
    m = LeakMatcher([token, *TOKENS[:50]], NAMES)
    monkeypatch.setattr(access, "SCAN_BLOCK_BYTES", block)
    for cut in range(1, len(token)):
        start = 3 * block - cut  # the token starts `cut` bytes before the end of the third block
        data = b"x" * (start - 1) + b" " + token.encode() + b" tail"
        p = tmp_path / f"f{cut}.bin"
        p.write_bytes(data)
        assert m.in_file(p, names=False) == [token], cut
        # the same bytes with the token joined to a longer file name are no reference
        p.write_bytes(data.replace(b" panoramas/", b"xpanoramas/"))
        assert m.in_file(p, names=False) == [], cut


def test_a_clean_export_passes(tmp_path):
    """An export without references passes, also with near misses of thousands of tokens in it."""
    files = {
        "buildings/tileset.json": '{"root": {"content": {"uri": "tiles/0_0_0.glb"}}}',
        "buildings/tiles/0_0_0.glb": b"glTF\x02\x00\x00\x00" + bytes(range(256)) * 40,
        "report/summary.csv": "last_change,changes,panoramas_count\n1,2,3\n",
        "viewer/app.js": "const panoramas = []; // the viewer feature, program code\n",
        "notes/near.txt": " ".join("x" + t for t in TOKENS[:2000]),  # each joined to a longer name
    }
    for rel, content in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert find_leaks(tmp_path, TOKENS, NAMES, ["viewer"]) == []
    (tmp_path / "notes" / "leak.txt").write_text(f"see {TOKENS[1234]} and the change layer")
    assert find_leaks(tmp_path, TOKENS, NAMES, ["viewer"]) == [
        ("notes/leak.txt", "change"),
        ("notes/leak.txt", TOKENS[1234]),
    ]


_PIECES = st.one_of(
    st.sampled_from(TOKENS),
    st.sampled_from(NAMES),
    st.sampled_from([" ", "/", ".", "-", "_", "x", "9", "raw/", "last_", "img_", '"', "\n", "é"]),
)


@settings(max_examples=120, deadline=None)
@given(parts=st.lists(_PIECES, max_size=60), block=st.integers(min_value=8, max_value=200))
def test_thousands_of_tokens_as_the_per_token_search(tmp_path_factory, parts, block):
    """With 5,000 tokens (many sharing prefixes and suffixes, glued together and to other text) the
    one-pass search finds exactly what the per-token search finds, in whole texts and in block reads."""
    text = "".join(parts)
    m = LeakMatcher(TOKENS, NAMES)
    for with_names in (False, True):
        expected = naive_search(TOKENS, NAMES, text, with_names=with_names)
        assert m.in_text(text, names=with_names) == expected
        p = tmp_path_factory.mktemp("blocks") / "f.bin"
        p.write_bytes(text.encode())
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(access, "SCAN_BLOCK_BYTES", block)
            assert m.in_file(p, names=with_names) == sorted(expected)


def test_every_token_is_found_alone():
    """Each of the 5,000 tokens is found where it stands on its own, and only that token (besides the
    tokens and names it contains as references, e.g. its folder)."""
    m = LeakMatcher(TOKENS, NAMES)
    for t in TOKENS[::7]:
        text = f"({t})"
        got = m.in_text(text, names=True)
        assert t in got
        assert got == naive_search(TOKENS, NAMES, text, with_names=True)


def test_no_tokens_find_nothing(tmp_path: Path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"anything panoramas/")
    assert LeakMatcher([], []).in_file(p, names=True) == []
    assert LeakMatcher([], ["panoramas"]).in_file(p, names=False) == []
    assert LeakMatcher([], ["panoramas"]).in_file(p, names=True) == ["panoramas"]

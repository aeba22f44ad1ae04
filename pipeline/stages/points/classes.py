"""Classification schemes: AdV (German state surveys, NRW 3D-Messdaten) and ASPRS (LAS 1.4 standard).

AdV codes whose meaning is not confirmed are named 'AdV <code>' (see docs/pointcloud.md); the scheme is
a plain table (`pipeline.point_attributes`) so a confirmed meaning is a one-line change.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import InputError
from pipeline.point_attributes import ADV_CLASSES, ASPRS_CLASSES, SCHEMES


def scheme_table(scheme: str) -> dict[int, str]:
    try:
        return SCHEMES[scheme]
    except KeyError as e:
        raise InputError(f"unknown class scheme {scheme!r} (adv or asprs)") from e


def check_classes(
    codes: np.ndarray, scheme: str, keep_unknown: bool, *, path, record: str | None = None
) -> None:
    """Refuse class codes the scheme does not know (unless `keep_unknown`; `auto`: checked once the scheme
    is inferred from all the codes, see `infer_class_scheme`)."""
    if keep_unknown or len(codes) == 0 or scheme == "auto":
        return
    unknown = sorted({int(c) for c in codes} - scheme_table(scheme).keys())
    if unknown:
        raise InputError(
            f"unknown classification code(s) {unknown} for the {scheme.upper()} scheme; choose the right "
            "scheme (--class-scheme / `class_scheme:`) or keep them with `unknown_classes: keep`",
            path=path,
            record=record,
        )


def enum_schema(scheme: str, codes_seen: list[int] | None = None) -> dict:
    """EXT_structural_metadata enum of a scheme (UINT8), plus 'unknown <code>' for kept unknown codes."""
    table = dict(scheme_table(scheme))
    for c in codes_seen or []:
        table.setdefault(int(c), f"unknown {int(c)}")
    return {
        "name": f"{scheme.upper()} classification",
        "valueType": "UINT8",
        "values": [{"name": name, "value": code} for code, name in sorted(table.items())],
    }


# codes only one of the schemes defines (the evidence `auto` weighs)
ADV_ONLY = frozenset(ADV_CLASSES) - frozenset(ASPRS_CLASSES)  # 20, 21, 24, 26
ASPRS_ONLY = frozenset(ASPRS_CLASSES) - frozenset(ADV_CLASSES)  # 0, 3-8, 10-16


def adv_file_name(name: str) -> bool:
    """NRW / AdV delivery naming: `3dm_<zone>_<E>_<N>_...` (3D-Messdaten) or a `_nw` state suffix."""
    import re

    n = name.lower()
    return bool(re.match(r"^3dm_\d{2}_", n) or re.search(r"_nw(_|\.|$)", n))


def infer_class_scheme(codes: list[int] | set[int], names: list[str]) -> tuple[str, str]:
    """The class scheme of `auto` and how it was inferred: (scheme, reason).

    Codes only AdV defines (20, 21, 24, 26) or AdV file naming (`3dm_32_*`, `*_nw*`) say AdV; codes only
    ASPRS defines (0, 3-8, 10-16) say ASPRS; codes both define (1, 2, 9, 17, 18) alone say nothing, and then
    ASPRS (the LAS standard) is taken. Contradicting codes are refused: the user must choose."""
    present = {int(c) for c in codes}
    adv_codes = sorted(present & ADV_ONLY)
    asprs_codes = sorted(present & ASPRS_ONLY)
    adv_names = [n for n in names if adv_file_name(n)]
    if adv_codes and asprs_codes:
        raise InputError(
            f"class scheme `auto`: codes {adv_codes} are AdV-only but codes {asprs_codes} are ASPRS-only; "
            "choose the scheme (--class-scheme adv|asprs / `class_scheme:`)"
        )
    if adv_codes:
        return "adv", f"codes {adv_codes} exist only in the AdV scheme"
    if asprs_codes:
        although = f" (although {adv_names[0]} is named like an AdV delivery)" if adv_names else ""
        return "asprs", f"codes {asprs_codes} exist only in the ASPRS scheme{although}"
    if adv_names:
        return "adv", f"file name {adv_names[0]} follows NRW/AdV naming; codes {sorted(present)} fit both"
    return (
        "asprs",
        f"codes {sorted(present)} fit both schemes and no file is named like an AdV delivery: ASPRS (LAS standard)",
    )

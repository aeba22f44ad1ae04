"""`twin demo --out DIR`: generate the deterministic demo district (a thin adapter over generate_demo)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from pipeline.sources.demo.generate import DEFAULT_MOBILE_DENSITY

    p = sub.add_parser(
        "demo",
        help="generate the synthetic demo district (aerial LAZ, DOP, DGM, ALKIS, mobile scans, truth)",
        description="Generate a deterministic synthetic district near Gelsenkirchen: two aerial epochs, "
        "orthophoto, DGM, ALKIS GeoPackage, mobile-mapping scans, panoramas and ground truth.",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory, e.g. data/raw")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--scale", type=float, default=1.0, help="area factor: 1 = 1 km², 100 = 10 km x 10 km")
    p.add_argument("--size-m", type=float, help="side of the square district in metres (overrides --scale)")
    p.add_argument("--tile-m", type=float, default=500.0, help="tile size in metres (default 500)")
    p.add_argument("--density", type=float, default=10.0, help="mean aerial pulses per m² (default 10)")
    p.add_argument(
        "--origin",
        type=float,
        nargs=2,
        default=(362000.0, 5716000.0),
        metavar=("E", "N"),
        help="south-west corner (default 362000 5716000)",
    )
    p.add_argument(
        "--epochs",
        nargs=2,
        default=("2021", "2024"),
        metavar=("FIRST", "SECOND"),
        help="names of the two survey epochs (default 2021 2024)",
    )
    p.add_argument("--no-mobile", action="store_true", help="skip the mobile-mapping scans and panoramas")
    p.add_argument(
        "--mobile-density",
        type=float,
        default=DEFAULT_MOBILE_DENSITY,
        help=f"mobile returns per km² of district (default {DEFAULT_MOBILE_DENSITY:.0e})",
    )
    p.add_argument(
        "--dop-resolution",
        type=float,
        default=0.1,
        help="orthophoto pixel size in m (default 0.1, as Geobasis NRW DOP10)",
    )
    p.add_argument(
        "--panorama-images",
        type=int,
        default=8,
        help="recording positions (consecutive, along one track) with a 360° image (default 8; 0: none)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a demo delivery already in --out")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from pipeline.sources.demo import generate_demo

    summary = generate_demo(
        args.out,
        seed=args.seed,
        scale=args.scale,
        size_m=args.size_m,
        tile_m=args.tile_m,
        origin=tuple(args.origin),
        density=args.density,
        epochs=tuple(args.epochs),
        mobile=not args.no_mobile,
        progress=not (args.quiet or args.json),
        mobile_density=args.mobile_density,
        dop_resolution=args.dop_resolution,
        overwrite=args.overwrite,
        panorama_images=args.panorama_images,
    )
    if args.json:
        print(summary.to_json())
        return 0
    c = summary.counts
    x0, y0, x1, y1 = summary.bounds
    table = Table(title=f"demo district -> {summary.out}", show_header=True)
    table.add_column("item")
    table.add_column("value", justify="right")
    rows = [
        ("district", f"E {x0:.0f}-{x1:.0f}, N {y0:.0f}-{y1:.0f} ({summary.size_m:g} m)"),
        ("seed / tile size", f"{summary.seed} / {summary.tile_m:g} m ({c['tiles']} tiles)"),
        ("structures (all epochs)", f"{c['structures']:,}"),
        ("cadastral building records", f"{c['cadastre_records']:,}"),
        ("parcels", f"{c['parcels']:,}"),
        ("trees", f"{c['trees']:,}"),
        *((f"aerial points {e}", f"{n:,}") for e, n in c["points"].items()),
        ("mobile points", f"{c['mobile_points']:,}"),
        ("panoramas (with image)", f"{c['panoramas']:,} ({c.get('panorama_images', 0)})"),
        ("changes", ", ".join(f"{k} {v}" for k, v in c["changes"].items())),
        ("invalid cadastral geometries", str(c["invalid_geometries"])),
        ("files", str(len(summary.files))),
        ("seconds", f"{summary.seconds:.1f}"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    Console().print(table)
    return 0

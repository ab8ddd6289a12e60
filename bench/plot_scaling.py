#!/usr/bin/env python3
"""Writes a log-log SVG of forward time vs N (dense and LLSA) from the CSV
that `bench_cpu all --csv` writes. Plain Python, no plotting library.
Usage: plot_scaling.py scaling.csv out.svg [title]"""
import csv
import math
import sys


def main():
    src, dst = sys.argv[1], sys.argv[2]
    title = sys.argv[3] if len(sys.argv) > 3 else "ditattn CPU: forward time vs N (D = 64, one head)"
    rows = list(csv.DictReader(open(src)))
    ns = [int(r["N"]) for r in rows]
    dense = [(int(r["N"]), float(r["dense_s"]), r["dense_kind"] == "measured") for r in rows]
    llsa = [(int(r["N"]), float(r["llsa_s"]), True) for r in rows]
    times = [t for _, t, _ in dense + llsa if t > 0]
    W, H, L, R, T, B = 720, 480, 80, 170, 50, 60
    x0, x1 = math.log2(min(ns)), math.log2(max(ns))
    y0 = math.floor(math.log10(min(times)))
    y1 = math.ceil(math.log10(max(times)))

    def px(n):
        return L + (math.log2(n) - x0) / (x1 - x0) * (W - L - R)

    def py(t):
        return T + (y1 - math.log10(t)) / (y1 - y0) * (H - T - B)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="25" text-anchor="middle" font-size="15">{title}</text>']
    for e in range(y0, y1 + 1):  # horizontal grid, one line per decade
        y = py(10.0 ** e)
        out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">1e{e} s</text>')
    for n in ns:
        x = px(n)
        out.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{H - B}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{H - B + 18}" text-anchor="middle">{n // 1024}K</text>')
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 15}" text-anchor="middle">N (tokens)</text>')
    out.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" '
               f'stroke="black"/>')

    def series(points, color, name, ly):
        for (na, ta, ma), (nb, tb, mb) in zip(points, points[1:]):
            dash = "" if (ma and mb) else ' stroke-dasharray="6,4"'
            out.append(f'<line x1="{px(na):.1f}" y1="{py(ta):.1f}" x2="{px(nb):.1f}" '
                       f'y2="{py(tb):.1f}" stroke="{color}" stroke-width="2"{dash}/>')
        for n, t, measured in points:
            fill = color if measured else "white"
            out.append(f'<circle cx="{px(n):.1f}" cy="{py(t):.1f}" r="4" fill="{fill}" '
                       f'stroke="{color}" stroke-width="2"/>')
        lx = W - R + 15
        out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 25}" y2="{ly}" stroke="{color}" '
                   f'stroke-width="2"/>')
        out.append(f'<text x="{lx + 30}" y="{ly + 4}">{name}</text>')

    series(dense, "#c0392b", "dense", T + 20)
    series(llsa, "#2471a3", "LLSA b16 L2 K8", T + 40)
    out.append(f'<text x="{W - R + 15}" y="{T + 70}" font-size="11">hollow / dashed:</text>')
    out.append(f'<text x="{W - R + 15}" y="{T + 84}" font-size="11">extrapolated (N^2),</text>')
    out.append(f'<text x="{W - R + 15}" y="{T + 98}" font-size="11">not measured</text>')
    out.append("</svg>")
    open(dst, "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()

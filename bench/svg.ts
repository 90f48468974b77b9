// SPDX-License-Identifier: Apache-2.0
// Horizontal bar charts as SVG text: one bar per row at the median, a whisker from the smallest
// to the largest run. Plain SVG 1.1, no fonts or scripts, so it renders anywhere (GitHub too).

export interface Bar {
  label: string;
  median: number;
  min: number;
  max: number;
  /** a failed or missing measurement: drawn as a note instead of a bar */
  note?: string;
}

const escape = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

const number = (x: number) =>
  x === 0
    ? "0"
    : x >= 100
      ? Math.round(x).toLocaleString("en-US")
      : x >= 10
        ? x.toFixed(1)
        : x.toFixed(2);

/** A "nice" upper bound for the axis: 1, 2 or 5 times a power of ten, at least `x`. */
function niceMax(x: number): number {
  if (!(x > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  return [1, 2, 5, 10].map(m => m * p).find(v => v >= x) ?? 10 * p;
}

export function barChart(title: string, unit: string, bars: Bar[]): string {
  const labelWidth = 170;
  const plotWidth = 420;
  const valueWidth = 110;
  const rowHeight = 24;
  const top = 40;
  const width = labelWidth + plotWidth + valueWidth;
  const height = top + bars.length * rowHeight + 30;
  const max = niceMax(Math.max(0, ...bars.filter(b => !b.note).map(b => b.max)));
  const x = (v: number) => labelWidth + (Math.max(0, v) / max) * plotWidth;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">${escape(title)}</text>`,
  ];
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const gx = x(v).toFixed(1);
    out.push(
      `<line x1="${gx}" y1="${top - 6}" x2="${gx}" y2="${top + bars.length * rowHeight}" stroke="#ddd"/>`,
    );
    out.push(
      `<text x="${gx}" y="${top + bars.length * rowHeight + 16}" text-anchor="middle" fill="#555">${number(v)}</text>`,
    );
  }
  out.push(
    `<text x="${labelWidth + plotWidth}" y="${top + bars.length * rowHeight + 28}" text-anchor="end" fill="#555">${escape(unit)}</text>`,
  );
  bars.forEach((b, i) => {
    const y = top + i * rowHeight;
    const mid = y + rowHeight / 2;
    out.push(
      `<text x="${labelWidth - 8}" y="${mid + 4}" text-anchor="end">${escape(b.label)}</text>`,
    );
    if (b.note) {
      out.push(`<text x="${labelWidth + 4}" y="${mid + 4}" fill="#a00">${escape(b.note)}</text>`);
      return;
    }
    const color = b.label.startsWith("blixt")
      ? "#2b6cb0"
      : b.label.startsWith("direct")
        ? "#718096"
        : "#dd6b20";
    out.push(
      `<rect x="${labelWidth}" y="${y + 4}" width="${(x(b.median) - labelWidth).toFixed(1)}" height="${rowHeight - 8}" fill="${color}"/>`,
    );
    const [x1, x2] = [x(b.min).toFixed(1), x(b.max).toFixed(1)];
    out.push(`<line x1="${x1}" y1="${mid}" x2="${x2}" y2="${mid}" stroke="#000"/>`);
    out.push(`<line x1="${x1}" y1="${mid - 5}" x2="${x1}" y2="${mid + 5}" stroke="#000"/>`);
    out.push(`<line x1="${x2}" y1="${mid - 5}" x2="${x2}" y2="${mid + 5}" stroke="#000"/>`);
    out.push(`<text x="${labelWidth + plotWidth + 8}" y="${mid + 4}">${number(b.median)}</text>`);
  });
  out.push("</svg>", "");
  return out.join("\n");
}

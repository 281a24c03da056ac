// Line charts drawn by uPlot (vendor/, MIT), loaded as a classic script
// before the modules run. Each chart also carries its numbers as a table
// for screen readers, and `data-total` (the sum of its points) for tests.

const COLOURS = ['#1d4ed8', '#b45309', '#047857', '#7c3aed', '#be123c', '#0e7490', '#4d7c0f', '#a16207'];

/**
 * A chart in `host`: `x` in Unix seconds, `series` [{label, values}].
 * Returns the figure element (already appended).
 */
export function lineChart(host, { title, x, series, unit = '', bars = false }) {
  const fig = document.createElement('figure');
  fig.className = 'chart';
  const cap = document.createElement('figcaption');
  cap.textContent = title;
  fig.append(cap);
  const total = series.reduce((a, s) => a + s.values.reduce((b, v) => b + (v || 0), 0), 0);
  fig.dataset.total = String(Math.round(total * 1000) / 1000);
  fig.dataset.points = String(x.length);
  const plot = document.createElement('div');
  plot.className = 'plot';
  plot.setAttribute('role', 'img');
  plot.setAttribute('aria-label', `${title}: chart; the numbers are in the table below it`);
  fig.append(plot);
  host.append(fig);
  const U = globalThis.uPlot;
  if (U && x.length) {
    const width = Math.max(280, Math.min(plot.clientWidth || host.clientWidth || 640, 1100));
    const opts = {
      width,
      height: 220,
      series: [
        {},
        ...series.map((s, i) => ({
          label: s.label,
          stroke: COLOURS[i % COLOURS.length],
          width: 2,
          fill: bars ? `${COLOURS[i % COLOURS.length]}33` : undefined,
          paths: bars && U.paths && U.paths.bars ? U.paths.bars({ size: [0.6, 40] }) : undefined,
          points: { show: !bars && x.length < 40 },
          value: (u, v) => (v === null || v === undefined ? '–' : `${round(v)}${unit}`),
        })),
      ],
      axes: [{}, { values: (u, vals) => vals.map((v) => `${round(v)}${unit}`), size: 60 }],
      // Bars centred on their day need half a step of room at each end.
      scales: { x: bars ? { time: true, range: (u, min, max) => [min - 43200, max + 43200] } : { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      legend: { live: true },
    };
    new U(opts, [x, ...series.map((s) => s.values)], plot);
  } else if (!x.length) {
    plot.textContent = 'No data in this period.';
    plot.className = 'plot empty';
  }
  // The same numbers, for anyone who cannot see the chart.
  const det = document.createElement('details');
  const sum = document.createElement('summary');
  sum.textContent = `${title}: the numbers`;
  det.append(sum);
  const t = document.createElement('table');
  const head = document.createElement('tr');
  for (const name of ['Time', ...series.map((s) => s.label)]) {
    const th = document.createElement('th');
    th.scope = 'col';
    th.textContent = name;
    head.append(th);
  }
  t.append(head);
  x.forEach((ts, i) => {
    const tr = document.createElement('tr');
    const cells = [new Date(ts * 1000).toISOString().replace('.000Z', 'Z'),
      ...series.map((s) => (s.values[i] === null || s.values[i] === undefined ? '–' : `${round(s.values[i])}${unit}`))];
    for (const c of cells) {
      const td = document.createElement('td');
      td.textContent = c;
      tr.append(td);
    }
    t.append(tr);
  });
  det.append(t);
  fig.append(det);
  return fig;
}

function round(v) {
  if (Math.abs(v) >= 100) return Math.round(v);
  return Math.round(v * 100) / 100;
}

/* runstore web UI: charts (uPlot), run selection for compare, small toggles.
 * Everything a run carries reaches the DOM through textContent, never innerHTML. */
(function () {
  "use strict";

  const PALETTE = ["#4f46e5", "#e8590c", "#0f9d58", "#d6336c", "#1c7ed6",
                   "#ae3ec9", "#f08c00", "#0ca678", "#5c7cfa", "#868e96"];
  const charts = (window.runstoreCharts = []);

  function alpha(hex, a) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
  }

  function fmt(v) {
    if (v === null || v === undefined) return "NaN";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    return String(Number(v.toPrecision(4)));
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  async function fetchSeries(run, spec, points, lo, hi) {
    const q = new URLSearchParams({ run: run.uuid, type: spec.type, key: spec.key, points });
    if (lo !== null && lo !== undefined) q.set("lo", Math.floor(lo));
    if (hi !== null && hi !== undefined) q.set("hi", Math.ceil(hi));
    const resp = await fetch("/ui/api/series?" + q.toString(), { credentials: "same-origin" });
    if (resp.status === 404) return null;          // this run has no such series
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    return resp.json();
  }

  // Markers for what a line cannot show, at the steps (or buckets) holding it: a red triangle
  // on the x axis for a NaN; for an infinity (which the server sends as a gap, listing its
  // step) a purple one pointing out of the plot: up at the top edge for +inf, down at the
  // bottom edge for -inf.
  function markers(state) {
    return (u) => {
      const ctx = u.ctx;
      const top = u.bbox.top;
      const bottom = u.bbox.top + u.bbox.height;
      const d = devicePixelRatio;
      const kinds = [
        ["nan", "#d92d20", bottom, -7],            // [kind, colour, base y, tip offset]
        ["posinf", "#7048e8", top + 7 * d, -7],
        ["neginf", "#7048e8", bottom - 7 * d, 7],
      ];
      ctx.save();
      state.results.forEach((res) => {
        if (!res) return;
        for (const [name, color, base, tip] of kinds) {
          const steps = res[name] || [];
          if (!steps.length) continue;
          ctx.fillStyle = color;
          for (const step of steps) {
            const x = Math.round(u.valToPos(step, "x", true));
            if (x < u.bbox.left - 1 || x > u.bbox.left + u.bbox.width + 1) continue;
            ctx.beginPath();
            ctx.moveTo(x, base + tip * d);
            ctx.lineTo(x - 4 * d, base);
            ctx.lineTo(x + 4 * d, base);
            ctx.closePath();
            ctx.fill();
          }
        }
      });
      ctx.restore();
    };
  }

  function buildLegend(fig, state) {
    let legend = fig.querySelector(".chart-legend");
    if (!legend) {
      legend = el("div", "chart-legend");
      fig.appendChild(legend);
    }
    legend.textContent = "";
    state.valueEls = [];
    state.runs.forEach((run, i) => {
      const res = state.results[i];
      const item = el("span", "item");
      const sw = el("span", "swatch");
      sw.style.background = PALETTE[i % PALETTE.length];
      item.appendChild(sw);
      item.appendChild(el("bdi", "", run.name));
      const val = el("span", "val", res ? "" : "—");
      item.appendChild(val);
      state.valueEls.push(val);
      legend.appendChild(item);
    });
    const shown = state.results.filter(Boolean);
    const raw = shown.every((r) => r.raw);
    const info = el("span", "chart-info",
      raw ? "all points" : "min/max band · last per bucket");
    legend.appendChild(info);
  }

  async function draw(fig, spec, runs, lo, hi) {
    const plot = fig.querySelector(".plot");
    const width = Math.max(200, Math.floor(plot.clientWidth));
    const points = Math.min(4000, 2 * width);
    plot.textContent = "";
    plot.appendChild(el("div", "loading", "Loading…"));
    let results;
    try {
      results = await Promise.all(runs.map((r) => fetchSeries(r, spec, points, lo, hi)));
    } catch (err) {
      plot.textContent = "";
      plot.appendChild(el("div", "chart-error", "Could not load this chart (" + err.message + ")"));
      fig.dataset.state = "error";
      return;
    }
    const state = { runs, results, spec };
    const tables = [];
    const series = [{}];
    const bands = [];
    let col = 1;
    results.forEach((res, i) => {
      if (!res) return;
      const color = PALETTE[i % PALETTE.length];
      const bucketed = !res.raw;
      const table = bucketed ? [res.x, res.y, res.min, res.max] : [res.x, res.y];
      tables.push(table);
      series.push({
        label: runs[i].name, stroke: color, width: 1.6, spanGaps: false,
        points: { show: res.raw && res.x.length <= 60, size: 5, fill: color },
      });
      if (bucketed) {
        series.push({ stroke: alpha(color, 0.35), width: 0.7, points: { show: false } });
        series.push({ stroke: alpha(color, 0.35), width: 0.7, points: { show: false } });
        bands.push({ series: [col + 2, col + 1], fill: alpha(color, 0.12) });
        col += 3;
      } else {
        col += 1;
      }
    });
    plot.textContent = "";
    if (!tables.length) {
      plot.appendChild(el("div", "loading", "No points in this range"));
      fig.dataset.state = "empty";
      return;
    }
    const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
    // Log scale (the toggle in the caption) only when every value is positive.
    const positive = data.slice(1).every((s) => s.every((v) => v == null || v > 0));
    const logScale = positive && fig.dataset.log === "1";
    const toggle = fig.querySelector(".log-toggle");
    if (toggle) {
      toggle.disabled = !positive;
      toggle.title = positive ? "logarithmic y axis" : "not every value is positive";
      toggle.classList.toggle("on", logScale);
      toggle.onclick = () => {
        fig.dataset.log = fig.dataset.log === "1" ? "0" : "1";
        draw(fig, spec, runs, lo, hi);
      };
    }
    const opts = {
      width, height: plot.clientHeight || 220,
      series, bands,
      legend: { show: false },
      scales: { x: { time: false }, y: logScale ? { distr: 3 } : {} },
      cursor: { drag: { x: true, y: false, setScale: false }, points: { size: 6 } },
      axes: [
        { stroke: "#667085", grid: { stroke: "#eef0f3", width: 1 }, ticks: { show: false },
          font: "11px system-ui, sans-serif" },
        { stroke: "#667085", grid: { stroke: "#eef0f3", width: 1 }, ticks: { show: false },
          size: 56, font: "11px system-ui, sans-serif",
          values: (u, vals) => vals.map(fmt) },
      ],
      hooks: {
        draw: [markers(state)],
        setSelect: [(u) => {
          if (u.select.width < 4) return;
          const a = u.posToVal(u.select.left, "x");
          const b = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
          state.zoomed = true;
          draw(fig, spec, runs, a, b);
        }],
        setCursor: [(u) => {
          const idx = u.cursor.idx;
          let s = 1;
          results.forEach((res, i) => {
            if (!res) return;
            const v = idx === null || idx === undefined ? null : u.data[s][idx];
            let text = v === null || v === undefined ? "" : fmt(v);
            if (text === "" && idx !== null && idx !== undefined) {
              const step = u.data[0][idx];
              if ((res.posinf || []).includes(step)) text = "+∞";
              else if ((res.neginf || []).includes(step)) text = "−∞";
            }
            state.valueEls[i].textContent = text;
            s += res.raw ? 1 : 3;
          });
        }],
      },
    };
    const u = new uPlot(opts, data, plot);
    buildLegend(fig, state);
    plot.ondblclick = () => draw(fig, spec, runs, null, null);
    const index = Number(fig.dataset.chart);
    const shown = results.filter(Boolean);
    charts[index] = { uplot: u, spec, runs: shown.length,
                      points: shown.map((r) => r.x.length), raw: shown.map((r) => r.raw) };
    fig.dataset.series = String(shown.length);
    fig.dataset.points = shown.map((r) => r.x.length).join(",");
    fig.dataset.requested = String(points);
    fig.dataset.state = "ready";
  }

  function initCharts() {
    const specEl = document.getElementById("chart-spec");
    if (!specEl) return;
    const spec = JSON.parse(specEl.textContent);
    const figs = document.querySelectorAll("figure.chart[data-chart]");
    // Draw charts as they scroll into view: a run with 50 metrics does not fetch 50 at once.
    const io = new IntersectionObserver((entries) => {
      entries.forEach((e) => {
        if (!e.isIntersecting) return;
        io.unobserve(e.target);
        const i = Number(e.target.dataset.chart);
        draw(e.target, spec.charts[i], spec.runs, null, null);
      });
    }, { rootMargin: "200px" });
    figs.forEach((f) => io.observe(f));
    let timer = null;
    window.addEventListener("resize", () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        charts.forEach((c, i) => {
          if (!c) return;
          const fig = document.querySelector(`figure.chart[data-chart="${i}"]`);
          const plot = fig.querySelector(".plot");
          c.uplot.setSize({ width: Math.floor(plot.clientWidth), height: plot.clientHeight || 220 });
        });
      }, 150);
    });
  }

  function updateCompareButton() {
    const button = document.getElementById("compare-button");
    if (!button) return;
    const n = document.querySelectorAll('input[name="run"][form="compare-form"]:checked').length;
    button.querySelector(".count").textContent = String(n);
    button.disabled = n < 2;
  }

  document.addEventListener("change", (e) => {
    const t = e.target;
    if (t.matches('input[name="run"][form="compare-form"]')) updateCompareButton();
    if (t.id === "only-diff") {
      document.querySelector("table.compare").classList.toggle("only-diff", t.checked);
    }
  });
  document.addEventListener("htmx:afterSettle", updateCompareButton);
  document.addEventListener("DOMContentLoaded", () => {
    const tail = document.getElementById("stdout-tail");
    if (tail) tail.scrollTop = tail.scrollHeight;  // the latest output first in view
    initCharts();
    updateCompareButton();
  });
})();

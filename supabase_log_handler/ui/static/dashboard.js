/* supabase-log ui: draws the charts.
 *
 * Each element with class "chart" carries its data in a data-chart attribute (JSON:
 * x = epoch seconds, series = [{label, values}], unit, kind). This file turns it into a
 * uPlot chart on page load and after every htmx swap, and records on the element what
 * was drawn: data-rendered="1" and data-points = the number of points with a value,
 * per series, inside the x range. It is the page's only script of its own; the pages
 * hold no inline script or style (the Content-Security-Policy forbids both).
 */
(function () {
  "use strict";
  var COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];

  function show(unit, v) {
    if (v === null || v === undefined) return "–";
    if (unit === "ms") return v >= 1000 ? (v / 1000).toFixed(1) + " s" : Math.round(v) + " ms";
    if (unit === "%") return (Math.round(v * 10) / 10) + "%";
    if (unit === "cost") return String(Math.round(v * 10000) / 10000);
    return String(Math.round(v * 100) / 100);
  }

  function drawnPoints(u) {
    var min = u.scales.x.min, max = u.scales.x.max, counts = [];
    for (var i = 1; i < u.data.length; i++) {
      var n = 0;
      for (var j = 0; j < u.data[i].length; j++) {
        var x = u.data[0][j];
        if (u.data[i][j] !== null && u.data[i][j] !== undefined && x >= min && x <= max) n++;
      }
      counts.push(n);
    }
    return counts;
  }

  function draw(el) {
    if (el.dataset.drawing) return;
    el.dataset.drawing = "1";
    var spec;
    try {
      spec = JSON.parse(el.getAttribute("data-chart"));
    } catch (e) {
      el.dataset.error = "unreadable chart data";
      return;
    }
    if (!spec.x.length) {
      el.textContent = "No data in this window.";
      el.classList.add("empty");
      el.dataset.points = "[]";
      el.dataset.rendered = "1";
      return;
    }
    var bars = spec.kind === "bars";
    var series = [{ value: "{YYYY}-{MM}-{DD} {HH}:{mm}" }];
    var data = [spec.x];
    spec.series.forEach(function (s, i) {
      var color = COLORS[i % COLORS.length];
      series.push({
        label: s.label,
        stroke: color,
        width: bars ? 1 : 2,
        fill: bars ? color + "66" : undefined,
        paths: bars ? uPlot.paths.bars({ size: [0.7, 40] }) : undefined,
        points: { show: true, size: 6 },
        spanGaps: false,
        value: function (u, v) { return show(spec.unit, v); }
      });
      data.push(s.values);
    });
    var step = 0;  // half the smallest gap on each side, so edge points and bars show whole
    for (var k = 1; k < spec.x.length; k++) {
      var gap = spec.x[k] - spec.x[k - 1];
      if (gap > 0 && (step === 0 || gap < step)) step = gap;
    }
    var pad = step ? step / 2 : 3600;
    var opts = {
      width: Math.max(el.clientWidth, 320),
      height: 220,
      series: series,
      scales: {
        x: { time: true, range: function (u, lo, hi) { return [lo - pad, hi + pad]; } },
        y: { range: function (u, lo, hi) { return [Math.min(0, lo || 0), Math.max(hi || 1, 1)]; } }
      },
      axes: [{}, { size: 64, values: function (u, vals) { return vals.map(function (v) { return show(spec.unit, v); }); } }],
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      hooks: {
        draw: [function (u) {
          el.dataset.points = JSON.stringify(drawnPoints(u));
          el.dataset.rendered = "1";
        }]
      }
    };
    new uPlot(opts, data, el);
  }

  function drawAll(root) {
    var found = (root || document).querySelectorAll(".chart[data-chart]");
    for (var i = 0; i < found.length; i++) draw(found[i]);
  }

  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:afterSettle", function (e) { drawAll(e.target); });
})();

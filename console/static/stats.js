/* The statistics page's charts: ECharts (served from this console: /static/vendor/echarts.min.js), drawn from the
   same JSON the tables are rendered from (#stats-data). Without ECharts the page keeps its tables. */
(function () {
  "use strict";
  var COLOURS = ["#2f6fb0", "#e07b39", "#3a9a5b", "#c0392b", "#8e44ad", "#16a085", "#d4ac0d", "#7f8c8d"];
  var MAX = 15;
  var TEXT = {};

  function text(key) {
    return Object.prototype.hasOwnProperty.call(TEXT, key) ? TEXT[key] : key;
  }

  function label(fig, key) {
    for (var i = 0; i < fig.columns.length; i++) { if (fig.columns[i].key === key) { return fig.columns[i].label; } }
    return key;
  }

  function option(fig) {
    var c = fig.chart;
    var rows = c.kind === "line" ? fig.rows : fig.rows.slice(0, MAX);
    var cats = rows.map(function (r) { return String(r[c.category]); });
    var pct = c.percent;
    var value = function (v) { return v === null || v === undefined ? null : (pct ? Math.round(v * 1000) / 10 : v); };
    if (c.kind === "pie") {
      return {
        color: COLOURS, animation: false,
        tooltip: { trigger: "item", formatter: "{b}: {c} ({d}%)" },
        legend: { type: "scroll", orient: "vertical", left: 0, top: 10 },
        series: [{ type: "pie", radius: ["35%", "65%"], center: ["62%", "50%"],
          data: rows.map(function (r) { return { name: String(r[c.category]), value: r[c.series[0]] }; }) }]
      };
    }
    return {
      color: COLOURS, animation: false,
      tooltip: { trigger: "axis", valueFormatter: function (v) {
        return v === null || v === undefined ? text("js.stats_none") : (pct ? v + "%" : v);
      } },
      legend: { top: 0 },
      grid: { left: 48, right: 16, top: 32, bottom: cats.length > 6 ? 70 : 30 },
      xAxis: { type: "category", data: cats, axisLabel: { rotate: cats.length > 6 ? 30 : 0, interval: 0 } },
      yAxis: { type: "value", min: 0, max: pct ? 100 : null, axisLabel: { formatter: pct ? "{value}%" : "{value}" } },
      series: c.series.map(function (key) {
        return { name: label(fig, key), type: c.kind, connectNulls: pct,
          data: rows.map(function (r) { return value(r[key]); }) };
      })
    };
  }

  function draw() {
    var node = document.getElementById("stats-data");
    if (!node || !window.echarts) { return; }
    var catalogue = document.getElementById("console-text");
    if (catalogue) { try { TEXT = JSON.parse(catalogue.textContent); } catch (err) { TEXT = {}; } }
    var data = JSON.parse(node.textContent);
    var charts = [];
    data.figures.forEach(function (fig) {
      var el = document.getElementById("chart-" + fig.name);
      if (!el || !fig.chart) { return; }
      if (!fig.rows.length) { el.classList.add("chart-empty"); return; }
      var chart = window.echarts.init(el, null, { renderer: "canvas" });
      chart.setOption(option(fig));
      el.setAttribute("data-drawn", "1");
      charts.push(chart);
    });
    document.body.setAttribute("data-charts", String(charts.length));
    window.addEventListener("resize", function () { charts.forEach(function (c) { c.resize(); }); });
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", draw); } else { draw(); }
})();

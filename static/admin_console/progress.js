/* Live progress in the admin: while any run (or dataset import: data-url names its endpoint) on the page is queued
   or running, poll its progress endpoint every two seconds and update the bar, percent and ETA in place; reload the
   page when one finishes (status, mAP, report). */
(function () {
  "use strict";
  const ACTIVE = ["queued", "running"];
  function fmt(seconds) {
    if (seconds === null || seconds === undefined) return "";
    seconds = Math.round(seconds);
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    return "ETA " + (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(s).padStart(2, "0");
  }
  async function tick() {
    const bars = Array.from(document.querySelectorAll(".run-progress"))
      .filter((el) => ACTIVE.includes(el.dataset.status));
    if (!bars.length) return;
    let finished = false;
    await Promise.all(bars.map(async (el) => {
      try {
        const url = el.dataset.url || ("/api/training-runs/" + el.dataset.run + "/progress/");
        const r = await fetch(url,
                              {credentials: "same-origin", headers: {Accept: "application/json"}});
        if (!r.ok) return;
        const p = await r.json();
        el.querySelector("progress").value = p.percent;
        el.querySelector(".pct").textContent = Math.round(p.percent) + "%";
        el.querySelector(".eta").textContent = p.status === "running" ? fmt(p.eta_seconds) : "";
        if (p.status !== el.dataset.status) {
          if (!ACTIVE.includes(p.status)) finished = true;
          el.dataset.status = p.status;
        }
      } catch (e) { /* network hiccup: try again next tick */ }
    }));
    if (finished) { window.location.reload(); return; }
    window.setTimeout(tick, 2000);
  }
  document.addEventListener("DOMContentLoaded", () => window.setTimeout(tick, 1000));
})();

// A link to a folded entry (a step's details on the run page) unfolds it.
function openTarget() {
  const id = decodeURIComponent(location.hash.slice(1));
  const target = id && document.getElementById(id);
  if (target && target.tagName === "DETAILS") target.open = true;
}
window.addEventListener("hashchange", openTarget);
window.addEventListener("DOMContentLoaded", openTarget);

// Live pages (runs in progress, a job queued): poll the API every 2 s and reload the page
// when what it shows has changed. The "live" checkbox, where there is one, pauses it.
(function () {
  "use strict";
  const data = document.body.dataset;
  if (!data.poll) return;
  const sorted = (o) => Object.keys(o).sort().map((k) => [k, o[k]]);
  const pick = {
    counts: (d) => JSON.stringify(sorted(d.counts)),
    run: (d) => JSON.stringify([d.status, d.attempt, d.tasks.length]),
    job: (d) => d.status,
  }[data.watchKind];
  const seen = data.watchKind === "counts" ? JSON.stringify(sorted(JSON.parse(data.watch))) : data.watch;
  async function tick() {
    const live = document.getElementById("live");
    if (!live || live.checked) {
      try {
        const response = await fetch(data.poll, { credentials: "same-origin" });
        if (response.ok && pick(await response.json()) !== seen) {
          location.reload();
          return;
        }
      } catch (e) {
        // the server is restarting: try again on the next tick
      }
    }
    setTimeout(tick, 2000);
  }
  setTimeout(tick, 2000);
})();

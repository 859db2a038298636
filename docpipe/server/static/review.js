// The review pages (docs/ui.md, "Review pages"): the reviewer's name, kept for the browser
// session; the task page claims its task through the REST API on opening, answers it (buttons,
// keys 1-9 and Enter, or the edit fields) and goes on to the next waiting task.
(function () {
  "use strict";
  const root = document.getElementById("review-config");
  if (!root) return;
  const NAME = "docpipe.reviewer";
  const $ = (id) => document.getElementById(id);
  const config = root.dataset.config ? JSON.parse(root.dataset.config) : null;
  let signedIn = root.dataset.signedIn === "1";

  function reviewer() {
    return sessionStorage.getItem(NAME) || "";
  }

  function showReviewer() {
    $("reviewer-shown").textContent = reviewer();
    $("reviewer-bar").hidden = false;
    $("reviewer-form").hidden = true;
  }

  // Ask once per browser session: the name (and, when the browser holds no token yet, the
  // server token: posted to /login like the login form, which leaves its cookie).
  function askReviewer() {
    return new Promise((resolve) => {
      const form = $("reviewer-form");
      form.hidden = false;
      $("reviewer-bar").hidden = true;
      $("reviewer-name").value = reviewer();
      $("reviewer-name").focus();
      form.addEventListener("submit", async function onSubmit(event) {
        event.preventDefault();
        const name = $("reviewer-name").value.trim();
        if (!name) return;
        const token = $("reviewer-token");
        if (token && !signedIn) {
          const body = new URLSearchParams({ token: token.value, next: "/static/review.js" });
          const reply = await fetch("/login", { method: "POST", body, credentials: "same-origin" });
          if (!reply.ok) {
            $("reviewer-error").textContent = "wrong token";
            return;
          }
          signedIn = true;
          token.closest("label").remove();
        }
        sessionStorage.setItem(NAME, name);
        form.removeEventListener("submit", onSubmit);
        showReviewer();
        resolve(name);
      });
    });
  }

  async function ensureReviewer() {
    if (reviewer() && signedIn) {
      showReviewer();
      return reviewer();
    }
    return askReviewer();
  }

  $("reviewer-change").addEventListener("click", () => {
    sessionStorage.removeItem(NAME);
    location.reload();
  });

  if (root.dataset.page !== "task") {
    ensureReviewer();
    return;
  }

  // ---- the task page ----
  const api = "/api/review/tasks/" + encodeURIComponent(config.task);
  const form = $("answer-form");
  const choices = Array.from(form.querySelectorAll("button.choice"));
  const fields = Array.from(form.querySelectorAll("[name]"));
  const lease = $("lease");
  let live = false; // this reviewer holds the task: the form answers
  let sending = false;

  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
  }

  async function detail(reply) {
    try {
      return (await reply.json()).detail || reply.statusText;
    } catch (e) {
      return reply.statusText;
    }
  }

  function until(ts) {
    return new Date(ts * 1000).toLocaleTimeString([], { hour12: false });
  }

  function setEnabled(on) {
    live = on;
    form.querySelectorAll("button, input, textarea").forEach((el) => { el.disabled = !on; });
    form.classList.toggle("readonly", !on);
  }

  function showHeld(task) {
    lease.dataset.state = "held";
    lease.replaceChildren("Held by ", Object.assign(document.createElement("b"),
      { className: "holder", textContent: task.lease_owner }), " until " + until(task.lease_expires_at) +
      ": read-only. Reload the page once the lease is over.");
  }

  async function claim(name) {
    const reply = await post(api + "/claim", { reviewer: name, lease_s: config.lease });
    if (reply.ok) {
      const task = await reply.json();
      lease.dataset.state = "mine";
      lease.textContent = "Claimed by you (" + name + ") until " + until(task.lease_expires_at) + ".";
      $("task-status").textContent = "claimed";
      $("task-status").className = "badge claimed";
      setEnabled(true);
      return;
    }
    const why = await detail(reply);
    if (reply.status === 409) {
      const task = await (await fetch(api, { credentials: "same-origin" })).json();
      if (task.status === "claimed") showHeld(task);
      else {
        lease.dataset.state = task.status;
        lease.textContent = why;
      }
      $("task-status").textContent = task.status;
      $("task-status").className = "badge " + task.status;
    } else {
      lease.dataset.state = "error";
      lease.textContent = "Not claimed: " + why;
    }
    setEnabled(false);
  }

  function pick(index) {
    if (index < 0 || index >= choices.length) return;
    choices.forEach((b, i) => b.classList.toggle("on", i === index));
    choices[index].focus();
  }

  function nextTask() {
    const query = new URLSearchParams({ after: config.task });
    if (config.flow) query.set("flow", config.flow);
    if (config.filterKind) query.set("kind", config.filterKind);
    location.assign("/review/next?" + query);
  }

  async function submit(answer) {
    if (!live || sending) return;
    sending = true;
    $("answer-error").textContent = "";
    const reply = await post(api + "/answer", { reviewer: reviewer(), answer });
    sending = false;
    if (reply.ok) {
      setEnabled(false);
      nextTask();
      return;
    }
    $("answer-error").textContent = await detail(reply);
    if (reply.status === 409) setEnabled(false);
  }

  function editAnswer() {
    const values = {};
    for (const el of fields) {
      if (el.dataset.json === "1") {
        try {
          values[el.name] = JSON.parse(el.value);
        } catch (e) {
          throw new Error(el.name + ": not JSON (" + e.message + ")");
        }
      } else {
        values[el.name] = el.value;
      }
    }
    return values;
  }

  choices.forEach((b) => b.addEventListener("click", () => submit(JSON.parse(b.dataset.value))));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    try {
      submit(editAnswer());
    } catch (e) {
      $("answer-error").textContent = e.message;
    }
  });
  $("skip").addEventListener("click", async () => {
    if (live) await post(api + "/release", { reviewer: reviewer() });
    nextTask();
  });
  document.addEventListener("keydown", (event) => {
    if (!live || !choices.length || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.matches && event.target.matches("input, textarea, select")) return;
    if (/^[1-9]$/.test(event.key)) {
      event.preventDefault();
      pick(Number(event.key) - 1);
    } else if (event.key === "Enter") {
      event.preventDefault();
      const on = choices.find((b) => b.classList.contains("on")) || choices[0];
      submit(JSON.parse(on.dataset.value));
    }
  });

  setEnabled(false);
  if (config.status === "answered") return;
  ensureReviewer().then(claim);
})();

// bench study: the rater's page. Talks to the JSON API only; keeps the rater's token in localStorage.
"use strict";
(() => {
  const KEY = "bench-study-token";
  const $ = (id) => document.getElementById(id);
  let token = null;
  let info = null;
  let state = null;
  let busy = false;
  let shownAt = 0;
  let inputVisible = false;
  let zoomPos = null;

  function show(section) {
    for (const id of ["loading", "join", "trial", "done"]) $(id).hidden = id !== section;
  }

  function message(text) { $("msg").textContent = text || ""; }

  async function api(method, path, body) {
    const headers = {};
    if (token) headers.Authorization = "Bearer " + token;
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    let data = {};
    try { data = await res.json(); } catch (e) { data = {}; }
    return { status: res.status, ok: res.ok, data };
  }

  function takeTokenFromHash() {
    const m = /^#t=([A-Za-z0-9_-]{20,100})$/.exec(location.hash);
    if (m) {
      localStorage.setItem(KEY, m[1]);
      history.replaceState(null, "", location.pathname);
    }
  }

  function forget() {
    localStorage.removeItem(KEY);
    token = null;
  }

  async function start() {
    takeTokenFromHash();
    token = localStorage.getItem(KEY);
    const r = await api("GET", "/api/study");
    if (!r.ok) { message("The study is not available."); return; }
    info = r.data;
    document.title = info.title;
    $("title").textContent = info.title;
    $("key-max").textContent = String(info.candidates);
    if (token) {
      const s = await api("GET", "/api/state");
      if (s.ok) { render(s.data); return; }
      if (s.status === 401) forget();
      else { message(s.data.error || "Could not load your progress; reload to try again."); return; }
    }
    showJoin();
  }

  function showJoin() {
    const box = $("groups");
    box.textContent = "";
    const labels = { expert: "Expert: I work with photos or imaging professionally",
                     amateur: "Amateur: I take or look at photos for fun" };
    for (const g of info.groups) {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "group";
      input.value = g;
      label.append(input, document.createTextNode(labels[g] || g));
      box.append(label);
    }
    $("join-count").textContent = `It takes ${info.trials} choices.`;
    show("join");
  }

  async function join(ev) {
    ev.preventDefault();
    const picked = document.querySelector('#groups input[name="group"]:checked');
    if (!picked) { message("Please choose the description that fits you best."); return; }
    $("start").disabled = true;
    try {
      const r = await api("POST", "/api/join", { group: picked.value });
      if (r.status !== 201) { message(r.data.error || "Could not join; please try again."); return; }
      token = r.data.token;
      localStorage.setItem(KEY, token);
      message("");
      const s = await api("GET", "/api/state");
      if (s.ok) render(s.data); else message(s.data.error || "Could not load the first photo.");
    } catch (e) {
      message("Connection problem; please try again.");
    } finally {
      $("start").disabled = false;
    }
  }

  function candidate(c) {
    const fig = document.createElement("figure");
    fig.className = "cand";
    fig.dataset.position = String(c.position);
    const shot = document.createElement("button");
    shot.type = "button";
    shot.className = "shot";
    shot.setAttribute("aria-label", `Zoom photo ${c.key}`);
    const img = document.createElement("img");
    img.src = c.url;
    img.alt = `Photo ${c.key}`;
    img.decoding = "async";
    shot.append(img);
    shot.addEventListener("click", () => openZoom(c.position));
    const cap = document.createElement("figcaption");
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "choose primary";
    btn.dataset.position = String(c.position);
    btn.innerHTML = `Choose <kbd>${c.key}</kbd>`;
    btn.addEventListener("click", () => choose(c.position));
    cap.append(btn);
    fig.append(shot, cap);
    return fig;
  }

  function render(s) {
    state = s;
    closeZoom();
    $("progress").hidden = false;
    $("progress-fill").style.width = `${s.total ? (100 * s.done) / s.total : 0}%`;
    if (!s.trial) {
      $("progress-text").textContent = `All ${s.total} done`;
      $("done-total").textContent = String(s.total);
      show("done");
      busy = false;
      return;
    }
    $("progress-text").textContent = `Photo ${s.done + 1} of ${s.total}`;
    const box = $("cands");
    box.textContent = "";
    document.documentElement.style.setProperty("--n", String(s.trial.candidates.length));
    for (const c of s.trial.candidates) box.append(candidate(c));
    const hasInput = Boolean(s.trial.input);
    $("toggle-input").hidden = !hasInput;
    if (hasInput) $("input-img").src = s.trial.input;
    setInput(hasInput && inputVisible);
    $("resume-link").href = `${location.origin}/#t=${token}`;
    $("resume-link").textContent = `${location.origin}/#t=…`;
    $("trial").dataset.trial = s.trial.id;
    show("trial");
    message("");
    shownAt = performance.now();
    busy = false;
  }

  async function choose(pos) {
    if (busy || !state || !state.trial) return;
    if (!Number.isInteger(pos) || pos < 0 || pos >= state.trial.candidates.length) return;
    busy = true;
    const card = document.querySelector(`.cand[data-position="${pos}"]`);
    if (card) card.classList.add("picked");
    const ms = Math.max(0, Math.round(performance.now() - shownAt));
    try {
      const r = await api("POST", "/api/vote", { trial: state.trial.id, choice: pos, ms });
      if (r.status === 201) {
        render(r.data.next);
        window.scrollTo(0, 0);
        return;
      }
      if (r.status === 401) { forget(); busy = false; showJoin(); message("Your session was not found; please join again."); return; }
      if (r.status === 409 || r.status === 404) {
        const s = await api("GET", "/api/state");
        if (s.ok) { render(s.data); return; }
      }
      message(r.data.error || "Could not save your choice; please try again.");
    } catch (e) {
      message("Connection problem: your choice was not saved; please try again.");
    }
    if (card) card.classList.remove("picked");
    busy = false;
  }

  function setInput(visible) {
    $("input-box").hidden = !visible;
    $("toggle-input").setAttribute("aria-pressed", String(visible));
    $("toggle-input").firstChild.textContent = visible ? "Hide input " : "Show input ";
  }

  function toggleInput() {
    if (!state || !state.trial || !state.trial.input) return;
    inputVisible = !inputVisible;
    setInput(inputVisible);
  }

  function openZoom(pos) {
    if (!state || !state.trial) return;
    const c = state.trial.candidates[pos];
    const img = $("zoom-img");
    img.classList.remove("enlarged");
    img.style.width = "";
    img.src = c.url;
    img.alt = `Photo ${c.key}, zoomed`;
    $("zoom-label").textContent = `Photo ${c.key}`;
    $("zoom-choose").innerHTML = `Choose this one <kbd>${c.key}</kbd>`;
    zoomPos = pos;
    $("zoom").hidden = false;
    $("zoom-close").focus();
  }

  function closeZoom() {
    $("zoom").hidden = true;
    zoomPos = null;
  }

  function toggleEnlarge() {
    const img = $("zoom-img");
    const on = img.classList.toggle("enlarged");
    // enlarged: 2 screen pixels per image pixel at least, scrollable
    img.style.width = on ? `${Math.max(img.naturalWidth * 2, 1)}px` : "";
  }

  function onKey(e) {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.target && ["INPUT", "TEXTAREA", "SELECT"].includes(e.target.tagName)) return;
    if ($("trial").hidden) return;
    if (/^[1-9]$/.test(e.key)) {
      e.preventDefault();
      choose(Number(e.key) - 1);
    } else if (e.key === "Escape") {
      closeZoom();
    } else if (e.key === "i" || e.key === "I") {
      toggleInput();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("join-form").addEventListener("submit", join);
    $("toggle-input").addEventListener("click", toggleInput);
    $("zoom-close").addEventListener("click", closeZoom);
    $("zoom-choose").addEventListener("click", () => { if (zoomPos !== null) choose(zoomPos); });
    $("zoom-img").addEventListener("click", toggleEnlarge);
    $("zoom-view").addEventListener("click", (e) => { if (e.target === $("zoom-view")) closeZoom(); });
    document.addEventListener("keydown", onKey);
    start().catch(() => message("Could not reach the study server; reload to try again."));
  });
})();

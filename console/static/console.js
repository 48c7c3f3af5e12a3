// Zoom and pan. A .zoom-group holds frames (.zoom-pane), each with a layer (.zoom-layer) that is scaled and moved.
// The frames of a group move together: the case's photo, outline, mask and Grad-CAM keep one zoom, and this photo and
// an earlier one are zoomed side by side (unless "together" is cleared). Without JavaScript images show at plain size.
const ZOOM_MIN = 1;
const ZOOM_MAX = 8;
const ZOOM_STEP = 1.25;
let activeZoom = null;  // the group the keyboard zooms: the one last pointed at or used

function zoomGroup(root, controls, together) {
  const panes = Array.from(root.querySelectorAll(".zoom-pane"));
  const states = panes.map(() => ({ s: 1, x: 0, y: 0 }));
  const level = controls && controls.querySelector(".zoom-level");
  const synced = () => !together || together.checked;
  const aspect = parseFloat(root.dataset.aspect) || 4 / 3;
  root.classList.add("zoomable");
  panes.forEach((p) => { p.style.aspectRatio = String(aspect); });

  // Every frame of a group has the same size; hidden ones measure 0, so take the first one shown.
  const frame = () => {
    for (const p of panes) {
      const r = p.getBoundingClientRect();
      if (r.width > 0) return [r.width, r.height];
    }
    return [0, 0];
  };
  const clamp = (st, w, h) => {
    st.s = Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, st.s));
    st.x = Math.min(0, Math.max(w - w * st.s, st.x));  // the photo always fills its frame
    st.y = Math.min(0, Math.max(h - h * st.s, st.y));
  };
  const render = () => {
    panes.forEach((p, i) => {
      const st = states[i];
      p.querySelector(".zoom-layer").style.transform = `translate(${st.x}px, ${st.y}px) scale(${st.s})`;
      p.dataset.scale = st.s.toFixed(3);
      p.classList.toggle("zoomed", st.s > 1);
    });
    if (level) level.textContent = states.map((st) => `${Math.round(st.s * 100)}%`)
      .filter((v, i, all) => all.indexOf(v) === i).join(" / ");
  };
  // Apply fn to pane i (and copy it to the others when they move together), or to every pane when i is null.
  const act = (i, fn) => {
    const [w, h] = frame();
    if (i === null && !synced()) {
      states.forEach((st) => { fn(st, w, h); clamp(st, w, h); });
    } else {
      const k = i === null ? 0 : i;
      fn(states[k], w, h);
      clamp(states[k], w, h);
      if (synced()) states.forEach((st) => Object.assign(st, states[k]));
    }
    render();
  };
  // Zoom by factor keeping the point (px, py) of the frame still (its centre by default).
  const zoomBy = (factor, px, py) => (st, w, h) => {
    const s = Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, st.s * factor));
    const cx = px === undefined ? w / 2 : px;
    const cy = py === undefined ? h / 2 : py;
    st.x = cx - (cx - st.x) * (s / st.s);
    st.y = cy - (cy - st.y) * (s / st.s);
    st.s = s;
  };
  const fit = (st) => { st.s = 1; st.x = 0; st.y = 0; };
  const group = {
    root,
    zoomIn: () => act(null, zoomBy(ZOOM_STEP)),
    zoomOut: () => act(null, zoomBy(1 / ZOOM_STEP)),
    fit: () => act(null, fit),
  };

  panes.forEach((pane, i) => {
    const at = (event) => {
      const r = pane.getBoundingClientRect();
      return [event.clientX - r.left, event.clientY - r.top];
    };
    pane.addEventListener("pointerenter", () => { activeZoom = group; });
    pane.addEventListener("wheel", (event) => {
      if (states[i].s <= ZOOM_MIN && event.deltaY > 0) return;  // nothing to zoom out of: let the page scroll
      event.preventDefault();
      activeZoom = group;
      act(i, zoomBy(Math.exp(-event.deltaY * 0.002), ...at(event)));
    }, { passive: false });
    let drag = null;
    pane.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      activeZoom = group;
      drag = { id: event.pointerId, x: event.clientX, y: event.clientY };
      pane.setPointerCapture(event.pointerId);
      pane.classList.add("dragging");
    });
    pane.addEventListener("pointermove", (event) => {
      if (!drag || drag.id !== event.pointerId) return;
      const dx = event.clientX - drag.x;
      const dy = event.clientY - drag.y;
      drag.x = event.clientX;
      drag.y = event.clientY;
      act(i, (st) => { st.x += dx; st.y += dy; });
    });
    const end = () => { drag = null; pane.classList.remove("dragging"); };
    pane.addEventListener("pointerup", end);
    pane.addEventListener("pointercancel", end);
    pane.addEventListener("dblclick", (event) => act(i, zoomBy(2, ...at(event))));
  });
  if (controls) {
    controls.hidden = false;
    const actions = { in: group.zoomIn, out: group.zoomOut, reset: group.fit };
    controls.querySelectorAll("button[data-zoom]").forEach((b) => b.addEventListener("click", () => {
      activeZoom = group;
      actions[b.dataset.zoom]();
    }));
  }
  if (together) together.addEventListener("change", () => act(0, () => {}));
  window.addEventListener("resize", () => act(null, () => {}));  // a narrower frame: keep the photo filling it
  render();
  return group;
}

// The case page's viewer: photo / outline / mask / Grad-CAM in one zoomable frame; O switches the outline.
let mainViewer = null;
let showKind = null;
document.addEventListener("DOMContentLoaded", () => {
  const viewer = document.getElementById("viewer");
  if (!viewer) return;
  const figures = viewer.querySelectorAll("figure[data-kind]");
  const buttons = document.querySelectorAll(".toggle button[data-show]");
  showKind = (kind) => {
    if (!viewer.querySelector(`figure[data-kind="${kind}"]`)) return;
    figures.forEach((f) => { f.hidden = f.dataset.kind !== kind; });
    buttons.forEach((b) => {
      b.classList.toggle("active", b.dataset.show === kind);
      b.setAttribute("aria-pressed", String(b.dataset.show === kind));
    });
    viewer.dataset.shown = kind;
  };
  buttons.forEach((b) => b.addEventListener("click", () => showKind(b.dataset.show)));
  showKind(viewer.dataset.default);
  mainViewer = zoomGroup(viewer, document.querySelector('[data-zoom-controls="viewer"]'), null);
  activeZoom = mainViewer;
  const keys = document.getElementById("viewer-keys");
  if (keys) keys.hidden = false;
});

// Compare with an earlier photo of the patient: both raw photos side by side at the same size, zoomed together.
// Choosing a case swaps the photo in place (the URL follows, so a reload shows the same); without JavaScript the
// form and the links reload the page with ?compare=.
document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("compare");
  const select = document.getElementById("compare-with");
  const form = document.getElementById("compare-form");
  if (!box || !select || !form) return;
  const group = zoomGroup(box, box.querySelector('[data-zoom-controls="compare"]'),
    document.getElementById("compare-sync"));
  const current = document.getElementById("compare-current");
  const earlier = document.getElementById("compare-earlier");
  const caption = document.getElementById("compare-caption");
  const open = (id) => {
    const option = Array.from(select.options).find((o) => o.value === String(id));
    const url = new URL(window.location.href);
    if (!option || !option.value) {
      box.hidden = true;
      url.searchParams.delete("compare");
      history.replaceState(null, "", url.pathname + url.search);
      if (activeZoom === group) activeZoom = mainViewer;
      return;
    }
    select.value = option.value;
    if (!current.getAttribute("src")) current.src = current.dataset.src;
    if (earlier.getAttribute("src") !== option.dataset.src) earlier.src = option.dataset.src;
    caption.textContent = `${option.dataset.caption} · photo as received`;
    box.hidden = false;
    group.fit();
    activeZoom = group;
    url.searchParams.set("compare", option.value);
    history.replaceState(null, "", `${url.pathname}${url.search}#compare`);
  };
  select.addEventListener("change", () => open(select.value));
  form.addEventListener("submit", (event) => { event.preventDefault(); open(select.value); });
  document.querySelectorAll("a.compare-link[data-compare]").forEach((a) => a.addEventListener("click", (event) => {
    event.preventDefault();
    open(a.dataset.compare);
    box.scrollIntoView({ block: "nearest" });
  }));
  if (!box.hidden) activeZoom = group;
});

// Viewer keys: + and - zoom, 0 fits, O switches the lesion outline; only while not typing, never with Ctrl/Cmd/Alt
// (Ctrl and + zooms the whole page). A, D, C and Ctrl+Enter stay the review form's (below).
document.addEventListener("DOMContentLoaded", () => {
  if (!mainViewer) return;
  const typing = (el) => el && (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT"
    || (el.tagName === "INPUT" && el.type !== "radio" && el.type !== "checkbox"));
  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    const group = activeZoom && !activeZoom.root.hidden ? activeZoom : mainViewer;
    const key = event.key;
    if (key === "+" || key === "=") group.zoomIn();
    else if (key === "-" || key === "_") group.zoomOut();
    else if (key === "0") group.fit();
    else if (key === "o" || key === "O") {
      const shown = document.getElementById("viewer").dataset.shown;
      showKind(shown === "overlay" ? "photo" : "overlay");
    } else return;
    event.preventDefault();
  });
});

// Review form shortcuts: A agree, D disagree, C cannot assess, Ctrl+Enter (Cmd+Enter) save and open the next case in the
// queue. Letters only act when the operator is not typing; Ctrl+Enter also works from the review form's
// own fields, never from another form (the follow-up message has its own button).
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("review-form");
  const saveNext = document.getElementById("save-next");
  if (!form || !saveNext) return;
  const typing = (el) => el && (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT"
    || (el.tagName === "INPUT" && el.type !== "radio" && el.type !== "checkbox"));
  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.repeat) return;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      if (event.target.form && event.target.form !== form) return;
      event.preventDefault();
      form.requestSubmit(saveNext);  // runs the form's own checks (a verdict is required)
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    const radio = { a: "verdict-agree", d: "verdict-disagree", c: "verdict-cannot-assess" }[event.key.toLowerCase()];
    if (!radio) return;
    event.preventDefault();
    document.getElementById(radio).checked = true;
  });
});

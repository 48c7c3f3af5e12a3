// Photo / outline / mask / Grad-CAM toggle on the case page. Without JavaScript every image is shown.
document.addEventListener("DOMContentLoaded", () => {
  const viewer = document.querySelector(".viewer");
  if (!viewer) return;
  const figures = viewer.querySelectorAll("figure[data-kind]");
  const buttons = document.querySelectorAll(".toggle button[data-show]");
  const show = (kind) => {
    figures.forEach((f) => { f.hidden = f.dataset.kind !== kind; });
    buttons.forEach((b) => b.classList.toggle("active", b.dataset.show === kind));
  };
  buttons.forEach((b) => b.addEventListener("click", () => show(b.dataset.show)));
  show(viewer.dataset.default);
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

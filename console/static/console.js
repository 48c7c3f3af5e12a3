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

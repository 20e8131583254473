"use strict";
// The report's behaviour: tooltips for [data-tip], the overlay sliders, click-to-enlarge, the class filter.
(function () {
  const tip = document.getElementById("tip");
  document.addEventListener("mouseover", (e) => {
    const el = e.target.closest ? e.target.closest("[data-tip]") : null;
    if (!el) { tip.hidden = true; return; }
    tip.textContent = el.getAttribute("data-tip");
    tip.hidden = false;
  });
  document.addEventListener("mousemove", (e) => {
    if (tip.hidden) return;
    const pad = 14, w = tip.offsetWidth, h = tip.offsetHeight;
    const x = Math.min(e.clientX + pad, window.innerWidth - w - 4);
    const y = e.clientY + pad + h > window.innerHeight ? e.clientY - h - pad : e.clientY + pad;
    tip.style.left = Math.max(4, x) + "px";
    tip.style.top = Math.max(4, y) + "px";
  });

  for (const card of document.querySelectorAll(".card")) {
    const slider = card.querySelector(".slider input");
    const top = card.querySelector(".overlay img.top");
    slider.addEventListener("input", () => { top.style.opacity = String(slider.value / 100); });
  }

  const box = document.getElementById("lightbox");
  const boxImg = box.querySelector("img");
  const boxCap = box.querySelector("figcaption");
  function enlarge(img) {
    boxImg.src = img.getAttribute("src");
    boxCap.textContent = img.getAttribute("data-caption") || "";
    box.hidden = false;
  }
  function close() { box.hidden = true; boxImg.removeAttribute("src"); }
  document.addEventListener("click", (e) => {
    if (!box.hidden) { close(); return; }
    const overlay = e.target.closest(".overlay");
    if (overlay) { enlarge(overlay.querySelector("img.base")); return; }
    if (e.target.matches(".panels img")) enlarge(e.target);
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !box.hidden) close(); });

  const gallery = document.getElementById("gallery");
  const filter = document.getElementById("class-filter");
  const count = document.getElementById("filter-count");
  const cards = Array.from(gallery.querySelectorAll(".card"));
  const ious = new Map(cards.map((c) => [c, JSON.parse(c.getAttribute("data-iou"))]));
  filter.addEventListener("change", () => {
    const name = filter.value;
    let shown = cards;
    if (name) {
      shown = cards.filter((c) => name in ious.get(c));
      shown.sort((a, b) => ious.get(a)[name] - ious.get(b)[name] || a.dataset.rank - b.dataset.rank);
    }
    const keep = new Set(shown);
    for (const c of cards) {
      c.hidden = !keep.has(c);
      c.querySelector(".class-score").textContent = name && keep.has(c) ? name + " " + (100 * ious.get(c)[name]).toFixed(1) + "%" : "";
    }
    for (const c of shown) gallery.appendChild(c);
    count.textContent = name ? shown.length + " of " + cards.length + " frames hold " + name + ", its worst IoU first" : cards.length + " frames";
  });
})();

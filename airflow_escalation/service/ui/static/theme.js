/* Follow Airflow's colour mode: the parent UI's <html class="dark|light"> when embedded (same
   origin), else Airflow's stored choice (localStorage "theme"), else the system setting. */
(function () {
  "use strict";
  var root = document.documentElement;

  function parentMode() {
    try {
      if (window.parent && window.parent !== window) {
        var cls = window.parent.document.documentElement.classList;
        if (cls.contains("dark")) return "dark";
        if (cls.contains("light")) return "light";
      }
    } catch (e) { /* another origin: no access */ }
    return null;
  }

  function storedMode() {
    try {
      var v = window.localStorage.getItem("theme");
      if (v === "dark" || v === "light") return v;
    } catch (e) { /* storage disabled */ }
    return null;
  }

  function apply() {
    var mode = parentMode() || storedMode();
    if (mode) root.setAttribute("data-theme", mode);
    else root.removeAttribute("data-theme"); /* prefers-color-scheme decides (CSS) */
  }

  apply();
  window.addEventListener("storage", function (e) { if (e.key === "theme") apply(); });
  try {
    if (window.parent && window.parent !== window && window.MutationObserver) {
      new MutationObserver(apply).observe(window.parent.document.documentElement,
        { attributes: true, attributeFilter: ["class"] });
    }
  } catch (e) { /* another origin */ }
  if (window.matchMedia) {
    var mq = window.matchMedia("(prefers-color-scheme: dark)");
    if (mq.addEventListener) mq.addEventListener("change", apply);
  }
})();

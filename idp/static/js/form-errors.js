// Every form page: when it comes back with errors, the summary above the form
// takes the focus (so a screen reader reads it and the keyboard starts there),
// and each of its links moves the focus to the control of the field it names,
// with the field's label and hint scrolled into view above it.
// Without JavaScript the links still jump to the field.
(function () {
  "use strict";
  var summary = document.querySelector("[data-error-summary]");
  if (!summary) { return; }

  // The control a summary link points at: the input itself, or for a group
  // of radio buttons (a "-field" target) the checked one, else the first.
  function controlFor(target) {
    if (target.matches("input, select, textarea")) { return target; }
    return target.querySelector("input:checked") ||
      target.querySelector("input:not([type=hidden]), select, textarea");
  }

  summary.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest('a[href^="#"]') : null;
    if (!link) { return; }
    var target = document.getElementById(link.getAttribute("href").slice(1));
    if (!target) { return; }
    var control = controlFor(target);
    if (!control) { return; }
    event.preventDefault();
    // A field inside a closed <details> (the passport country) opens first.
    var details = control.closest("details");
    if (details) { details.open = true; }
    var field = control.closest(".field") || target;
    field.scrollIntoView();
    control.focus({ preventScroll: true });
  });

  summary.focus();
})();

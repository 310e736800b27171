// Registration form: show only the identity fields of the chosen document.
// Without JavaScript both groups stay visible and the server uses the chosen one.
// When the page comes back with errors, the summary at the top takes the focus,
// and its links move the focus to the field they name.
(function () {
  "use strict";
  var form = document.getElementById("register-form");
  if (!form) { return; }

  function update() {
    var chosen = form.querySelector('input[name="id_type"]:checked');
    var kind = chosen ? chosen.value : "mykad";
    var groups = form.querySelectorAll(".id-group");
    for (var i = 0; i < groups.length; i++) {
      groups[i].hidden = groups[i].getAttribute("data-id-type") !== kind;
    }
  }
  var radios = form.querySelectorAll('input[name="id_type"]');
  for (var i = 0; i < radios.length; i++) {
    radios[i].addEventListener("change", update);
  }
  update();

  var summary = document.getElementById("form-errors");
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
    // Show the field's label and hint above the control, not just the control.
    var field = control.closest(".field") || target;
    field.scrollIntoView();
    control.focus({ preventScroll: true });
  });

  summary.focus();
})();

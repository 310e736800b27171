// Registration form: show only the identity fields of the chosen document,
// and mark the institution required or optional for the chosen category.
// Without JavaScript both groups stay visible and the server uses the chosen one.
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

  // The institution is required for most categories; for the ones listed in
  // its data-optional-for it is not, and its label then says "(optional)".
  // The server applies the same rule whatever this script does.
  var category = document.getElementById("category");
  var institution = document.getElementById("institution");
  if (category && institution) {
    var optionalFor = (institution.getAttribute("data-optional-for") || "").split(" ");
    var mark = form.querySelector('label[for="institution"] .optional-mark');
    var updateInstitution = function () {
      var optional = optionalFor.indexOf(category.value) !== -1;
      institution.required = !optional;
      if (mark) { mark.hidden = !optional; }
    };
    category.addEventListener("change", updateInstitution);
    updateInstitution();
  }
})();

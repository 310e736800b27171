// Registration form: show only the identity fields of the chosen document.
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
})();

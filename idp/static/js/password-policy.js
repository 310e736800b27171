// New-password fields: say which rule a password breaks while it is typed,
// in the page's language, before the form is sent. The server is the
// authority and checks every rule again, the breached-password list among
// them; this script only checks what is cheap and safe to do in the page:
// length, repetition, sequences, keyboard walks and the service's names.
// The rules mirror idp/services/passwords.py; the messages come from the
// field's data-policy-* attributes, already translated.
(function (root) {
  "use strict";

  var ROWS = ["1234567890-=", "qwertyuiop[]", "asdfghjkl;'", "zxcvbnm,./"];
  var MIN_REMAINDER = 6;

  function fold(text) {
    return text.normalize("NFKC").toLowerCase().trim();
  }

  function compact(folded) {
    return folded.replace(/[^\p{L}\p{N}]+/gu, "");
  }

  function period(text) {
    for (var size = 1; size <= text.length / 2; size++) {
      var unit = text.slice(0, size);
      var repeated = "";
      while (repeated.length < text.length) { repeated += unit; }
      if (repeated.slice(0, text.length) === text) { return size; }
    }
    return 0;
  }

  var neighbours = (function () {
    var where = {};
    ROWS.forEach(function (keys, row) {
      for (var column = 0; column < keys.length; column++) {
        where[keys[column]] = [row, column];
      }
    });
    var offsets = [[0, -1], [0, 1], [-1, 0], [-1, 1], [1, -1], [1, 0]];
    var result = {};
    Object.keys(where).forEach(function (key) {
      var place = where[key];
      result[key] = {};
      offsets.forEach(function (offset) {
        var row = ROWS[place[0] + offset[0]];
        var other = row && row.charAt(place[1] + offset[1]);
        if (other) { result[key][other] = true; }
      });
    });
    return result;
  })();

  function isDigit(ch) { return ch >= "0" && ch <= "9"; }
  function isAsciiLetter(ch) { return ch >= "a" && ch <= "z"; }

  function sequenceStep(a, b) {
    if (isDigit(a) && isDigit(b)) {
      var difference = ((Number(b) - Number(a)) % 10 + 10) % 10;
      return difference === 1 ? 1 : difference === 9 ? -1 : 0;
    }
    if (isAsciiLetter(a) && isAsciiLetter(b)) {
      var step = b.charCodeAt(0) - a.charCodeAt(0);
      return step === 1 || step === -1 ? step : 0;
    }
    return 0;
  }

  var LINKS = {
    repetition: function (link, a, b) { return a === b; },
    sequence: function (link, a, b) {
      var step = sequenceStep(a, b);
      return step && (link === null || link === step) ? step : 0;
    },
    keyboard: function (link, a, b) {
      return Boolean(neighbours[a] && neighbours[a][b]);
    }
  };

  // Which characters sit in a run of three or more linked neighbours.
  function runs(chars, linked) {
    var covered = chars.map(function () { return false; });
    var start = 0;
    var link = null;
    for (var i = 1; i <= chars.length; i++) {
      var step = i < chars.length ? linked(link, chars[i - 1], chars[i]) : null;
      if (step) { link = step; continue; }
      if (i - start >= 3) {
        for (var j = start; j < i; j++) { covered[j] = true; }
      }
      start = i;
      link = null;
      if (i < chars.length) {
        var first = linked(null, chars[i - 1], chars[i]);
        if (first) { start = i - 1; link = first; }
      }
    }
    return covered;
  }

  function pattern(text) {
    var chars = Array.from(text);
    if (!chars.length) { return null; }
    if (period(chars.join(""))) { return "repetition"; }
    var masks = {};
    Object.keys(LINKS).forEach(function (code) {
      masks[code] = runs(chars, LINKS[code]);
    });
    var all = chars.every(function (ch, i) {
      return masks.repetition[i] || masks.sequence[i] || masks.keyboard[i];
    });
    if (!all) { return null; }
    var best = null;
    var most = -1;
    ["repetition", "sequence", "keyboard"].forEach(function (code) {
      var count = masks[code].filter(Boolean).length;
      if (count > most) { best = code; most = count; }
    });
    return best;
  }

  function weakBase(folded) {
    return folded.replace(/^[^\p{L}\p{M}]+|[^\p{L}\p{M}]+$/gu, "");
  }

  function withoutWords(text, words) {
    var found = false;
    words.slice().sort(function (a, b) { return b.length - a.length; })
      .forEach(function (word) {
        if (word && text.indexOf(word) !== -1) {
          text = text.split(word).join("");
          found = true;
        }
      });
    return found ? text : null;
  }

  // The first rule ``password`` breaks, as a code, or null.
  function check(password, minimum, words) {
    var normalised = password.normalize("NFKC");
    if (Array.from(normalised).length < minimum) { return "too-short"; }
    var folded = fold(password);
    var text = compact(folded);
    var found = pattern(text);
    var base = compact(weakBase(folded));
    if (!found && Array.from(base).length >= 4) { found = pattern(base); }
    if (found) { return found; }
    var rest = withoutWords(text, words);
    if (rest !== null && (
      Array.from(rest).length < MIN_REMAINDER || /^\d*$/.test(rest) || pattern(rest)
    )) {
      return "service-name";
    }
    return null;
  }

  root.passwordPolicyCheck = check;
  if (typeof document === "undefined") { return; }

  var field = document.getElementById("password");
  var hint = document.getElementById("password-hint");
  if (!field || !hint || !field.hasAttribute("data-policy-min")) { return; }
  var minimum = Number(field.getAttribute("data-policy-min"));
  var words = (field.getAttribute("data-policy-words") || "").split(" ")
    .filter(Boolean);

  function update() {
    var code = field.value ? check(field.value, minimum, words) : null;
    var message = code ? field.getAttribute("data-policy-" + code) : "";
    hint.textContent = message || "";
    hint.hidden = !message;
    if (message) {
      field.setAttribute("aria-invalid", "true");
    } else {
      field.removeAttribute("aria-invalid");
    }
  }
  field.addEventListener("input", update);
  field.addEventListener("blur", update);
})(typeof globalThis !== "undefined" ? globalThis : this);

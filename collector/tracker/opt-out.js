// The /opt-out page's switch: sets or clears localStorage.veil_ignore, which veil.js honours.
(function () {
  var state = document.getElementById("state");
  var button = document.getElementById("toggle");
  function on() {
    try { return localStorage.getItem("veil_ignore") === "true"; } catch (e) { return false; }
  }
  function render() {
    var gpc = navigator.globalPrivacyControl === true;
    state.textContent = gpc
      ? "Your browser sends Global Privacy Control: Veil does not record your visits."
      : on() ? "You are opted out: Veil's tracker sends nothing from this browser."
      : "You are not opted out.";
    button.textContent = on() ? "Opt back in" : "Opt out";
    button.hidden = false;
  }
  button.addEventListener("click", function () {
    try {
      if (on()) localStorage.removeItem("veil_ignore");
      else localStorage.setItem("veil_ignore", "true");
    } catch (e) {
      state.textContent = "This browser blocks local storage; use Global Privacy Control instead.";
      return;
    }
    render();
  });
  render();
})();

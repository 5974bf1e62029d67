// Plan page: show a progress bar while the simulation runs (the answer comes with the next page).
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("plan-form");
  if (!form) return;
  form.addEventListener("submit", function () {
    document.getElementById("plan-progress").hidden = false;
    document.getElementById("plan-submit").disabled = true;
  });
});

// The password-reset and email-verification pages (app/templates/pages).
//
// The one-time token arrives in the URL fragment, which the browser never sends to a server.
// It is read once, kept in this closure only (never in storage), and removed from the address
// bar and the history entry at once, so it is not left behind for the next person at this
// computer. Opening the page spends nothing: only pressing the form's button posts the token.
// Text from the server is always set with textContent, never parsed as HTML.
"use strict";

(() => {
  const page = document.body.dataset.page;
  const token = takeTokenFromFragment();

  const statusLine = document.getElementById("status");
  const requestSection = document.getElementById("request");
  const requestForm = document.getElementById("request-form");
  const emailInput = document.getElementById("email");

  function takeTokenFromFragment() {
    const fragment = window.location.hash.replace(/^#/, "");
    const value = new URLSearchParams(fragment).get("token");
    if (fragment) {
      window.history.replaceState(
        window.history.state,
        "",
        window.location.pathname + window.location.search,
      );
    }
    return value && value.trim() ? value.trim() : null;
  }

  function show(element) {
    element.hidden = false;
  }

  function hide(element) {
    element.hidden = true;
  }

  function say(text, kind) {
    statusLine.textContent = text;
    statusLine.classList.toggle("problem", kind === "problem");
    statusLine.classList.toggle("success", kind === "success");
    show(statusLine);
  }

  function focusHeading(text) {
    const heading = document.getElementById("heading");
    if (text) {
      heading.textContent = text;
      document.title = `${text} · ${document.title.split(" · ").slice(1).join(" · ")}`;
    }
    heading.focus();
  }

  function setFieldError(input, message) {
    const error = document.getElementById(`${input.id}-error`);
    if (message) {
      error.textContent = message;
      show(error);
      input.setAttribute("aria-invalid", "true");
    } else {
      error.textContent = "";
      hide(error);
      input.removeAttribute("aria-invalid");
    }
  }

  // Our 422 body: {"detail": [{"loc": ["body", "new_password"], "msg": "Value error, ...", ...}]}
  function fieldMessages(data, field) {
    if (!data || !Array.isArray(data.detail)) {
      return [];
    }
    return data.detail
      .filter((issue) => Array.isArray(issue.loc) && issue.loc[issue.loc.length - 1] === field)
      .map((issue) => String(issue.msg || "").replace(/^Value error, /, ""));
  }

  function retryText(response) {
    const seconds = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    if (Number.isFinite(seconds) && seconds > 0) {
      const minutes = Math.ceil(seconds / 60);
      return seconds < 90 ? `${seconds} seconds` : `${minutes} minutes`;
    }
    return "a few minutes";
  }

  async function postJson(form, body) {
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(form.action, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
        referrerPolicy: "no-referrer",
      });
      let data = null;
      try {
        data = await response.json();
      } catch {
        data = null;
      }
      return { response, data };
    } catch {
      say("The service could not be reached. Check your connection and try again.", "problem");
      return null;
    } finally {
      button.disabled = false;
      form.removeAttribute("aria-busy");
    }
  }

  function unexpected(response) {
    if (response.status === 429) {
      say(`Too many attempts. Try again in ${retryText(response)}.`, "problem");
    } else {
      say("Something went wrong on our side. Try again in a moment.", "problem");
    }
  }

  function offerNewLink(reason) {
    document.getElementById("request-reason").textContent = reason;
    show(requestSection);
  }

  requestForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const email = emailInput.value.trim();
    if (!email) {
      setFieldError(emailInput, "Enter the email address of your account.");
      emailInput.focus();
      return;
    }
    setFieldError(emailInput, null);
    const result = await postJson(requestForm, { email });
    if (!result) {
      return;
    }
    const { response, data } = result;
    if (response.status === 202) {
      hide(requestForm);
      say(
        (data && typeof data.detail === "string" && data.detail) ||
          "If that address belongs to an account, a new link is on its way.",
        "success",
      );
    } else if (response.status === 422) {
      setFieldError(emailInput, "Enter a valid email address, such as ada@example.com.");
      emailInput.focus();
    } else {
      unexpected(response);
    }
  });

  function passwordResetPage() {
    const form = document.getElementById("reset-form");
    const input = document.getElementById("new-password");
    const reveal = document.getElementById("show-password");
    if (!token) {
      focusHeading("This reset link is incomplete");
      offerNewLink(
        "Open the link from the mail again, without changing it, or ask for a new one.",
      );
      return;
    }
    show(form);
    reveal.addEventListener("change", () => {
      input.type = reveal.checked ? "text" : "password";
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!input.value) {
        setFieldError(input, "Enter a new password.");
        input.focus();
        return;
      }
      setFieldError(input, null);
      const result = await postJson(form, { token, new_password: input.value });
      if (!result) {
        return;
      }
      const { response, data } = result;
      if (response.status === 204) {
        input.value = "";
        hide(form);
        show(document.getElementById("done"));
        hide(statusLine);
        focusHeading("Your password has been changed");
      } else if (response.status === 422) {
        const messages = fieldMessages(data, "new_password");
        setFieldError(
          input,
          messages.length
            ? `The password ${messages.join("; ")}.`
            : "This password cannot be used. Choose another one.",
        );
        input.focus();
      } else if (response.status === 400) {
        input.value = "";
        hide(form);
        hide(statusLine);
        focusHeading("This reset link no longer works");
        offerNewLink("It has expired, was already used, or a newer link replaced it.");
      } else {
        unexpected(response);
      }
    });
  }

  function emailVerificationPage() {
    const form = document.getElementById("confirm-form");
    if (!token) {
      focusHeading("This confirmation link is incomplete");
      offerNewLink(
        "Open the link from the mail again, without changing it, or ask for a new one.",
      );
      return;
    }
    show(form);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const result = await postJson(form, { token });
      if (!result) {
        return;
      }
      const { response, data } = result;
      if (response.status === 200) {
        hide(form);
        hide(statusLine);
        document.getElementById("verified-email").textContent =
          (data && typeof data.email === "string" && data.email) || "your address";
        show(document.getElementById("done"));
        focusHeading("Your email address is confirmed");
      } else if (response.status === 400) {
        hide(form);
        hide(statusLine);
        focusHeading("This confirmation link no longer works");
        offerNewLink("It has expired, was already used, or a newer link replaced it.");
      } else if (response.status === 409) {
        hide(form);
        focusHeading("This address is taken");
        say("Another account registered this address meanwhile, so it cannot be yours.", "problem");
      } else {
        unexpected(response);
      }
    });
  }

  // A link pasted into this tab changes only the fragment, which reloads nothing: start over
  // with the new token, as if the link had opened a fresh page.
  window.addEventListener("hashchange", () => window.location.reload());

  if (page === "password-reset") {
    passwordResetPage();
  } else if (page === "email-verification") {
    emailVerificationPage();
  }
})();

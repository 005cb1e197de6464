/* Text for errors and money, in the page's language. */
import { gettext, interpolate } from "./i18n.js";

export function errorText(error) {
  if (!error) return "";
  const code = error.code;
  if (code === "rate_limited") {
    return error.retry_after != null
      ? interpolate(gettext("Rate limited: try again in %s s"), [Math.max(1, Math.ceil(Number(error.retry_after)))])
      : gettext("Rate limited: try again later");
  }
  if (code === "upstream_rate_limited") return gettext("Rate limited by the model provider: try again in a moment");
  if (code === "model_unavailable" || code === "unknown_model") return gettext("This model is not available");
  if (code === "interrupted") return gettext("The reply was interrupted");
  if (code === "busy") return gettext("A reply is still streaming in this conversation: wait for it or stop it");
  if (code === "auth_expired") return gettext("Your session ended: log in again");
  if (code === "not_found") return gettext("Not found: it may have been deleted");
  if (code === "first_token_timeout" || code === "timeout" || code === "total_timeout") return gettext("The model took too long to answer");
  if (code === "idle_timeout") return gettext("The model stopped sending: the reply was cut short");
  return error.message || interpolate(gettext("Something went wrong (%s)"), [code]);
}

// The rule of streamchat.pricing.usd, which prints money everywhere else: the exact amount (the
// server sends decimal strings), at least two decimals; so a sub-cent cost never reads "$0.00".
export function formatCost(cost) {
  if (cost == null || cost === "") return gettext("cost unknown");
  let text = String(cost).trim();
  if (!/^-?\d+(\.\d+)?$/.test(text)) {  // a number, or exponent notation: at most 12 places
    const value = Number(cost);
    if (!isFinite(value)) return gettext("cost unknown");
    text = value.toFixed(12);
  }
  let sign = text.charAt(0) === "-" ? "-" : "";
  const parts = text.replace(/^-/, "").split(".");
  const whole = parts[0].replace(/^0+(?=\d)/, "").replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  let fraction = (parts[1] || "").replace(/0+$/, "");
  while (fraction.length < 2) fraction += "0";
  if (!/[1-9]/.test(whole + fraction)) sign = "";
  return sign + "$" + whole + "." + fraction;
}

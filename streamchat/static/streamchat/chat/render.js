/* streamchat: model output (Markdown) → sanitised DOM, for the chat page. A native ES module, no
 * build step; the vendored libraries it uses are classic deferred scripts that run before it
 * (window.markdownit, DOMPurify, hljs, katex, texmath, markdownitFootnote, markdownitTaskLists).
 *
 *   markdown(text, {docId, streaming}) → a sanitised DocumentFragment
 *   streamingText(text)                → the text to show while a reply is still arriving
 *   plainText(markdown)                → the text of some Markdown, without its markup (titles)
 *
 * The same three are `window.streamchatRender`, for the tests and for a host's own scripts (not
 * `window.streamchat`: that name is the chat's element, id="streamchat").
 *
 * Guarantees kept here:
 * - markdown-it runs with raw HTML off, and the whole HTML it produces (highlight.js spans, KaTeX's
 *   HTML and MathML, footnotes, task list checkboxes) is sanitised by DOMPurify on every render.
 * - No HTML string holds a `style` attribute: the page's CSP refuses them, and logs a violation for
 *   each one even when DOMPurify drops it afterwards. Table alignment becomes a class; KaTeX's
 *   layout travels in `data-sc-style` and is applied through the CSSOM (which the CSP allows),
 *   only inside KaTeX's output, only for the properties and values KaTeX uses.
 * - SVG and MathML survive only inside KaTeX's output; a checkbox is the only input, disabled.
 */
import { gettext, interpolate } from "./i18n.js";

var MATH_CLASS = "katex";

// --- markdown-it and its plugins ------------------------------------------------------------

var md = window.markdownit({ html: false, linkify: true, typographer: false, highlight: highlight });

/** Code of a fenced block with a language highlight.js knows; "" lets markdown-it escape it. */
function highlight(code, info) {
  var lang = (info || "").trim().split(/\s+/)[0];
  if (!window.hljs || !lang || !window.hljs.getLanguage(lang)) return "";
  try {
    var html = window.hljs.highlight(code, { language: lang, ignoreIllegals: true }).value;
    return '<pre><code class="hljs language-' + md.utils.escapeHtml(lang) + '">' + html + "</code></pre>";
  } catch (e) {
    return "";
  }
}

var KATEX_OPTIONS = {
  throwOnError: true, // shown as the TeX source instead (KaTeX's own error span has a style)
  strict: "ignore",
  trust: false, // no \href, \url, \includegraphics, \html…
  maxSize: 20, // em: no \rule or \kern that covers the page
  maxExpand: 1000,
  output: "htmlAndMathml"
};

function renderTex(tex, display) {
  if (!window.katex) return '<code class="sc-math-source">' + md.utils.escapeHtml(tex) + "</code>";
  try {
    var html = window.katex.renderToString(tex, Object.assign({}, KATEX_OPTIONS, { displayMode: display }));
    // KaTeX escapes `"` in text and attribute values, so ` style="` only ever opens its own
    // style attributes.
    return html.replace(/ style="/g, ' data-sc-style="');
  } catch (e) {
    return '<code class="sc-math-error" title="' + md.utils.escapeHtml(String(e && e.message || e)) + '">' +
      md.utils.escapeHtml(tex) + "</code>";
  }
}

if (window.texmath) {
  md.use(window.texmath, { engine: window.katex, delimiters: ["dollars", "brackets"] });
  // Our own markup around KaTeX's (texmath's templates use made-up tags and String.replace
  // patterns that KaTeX's output could trip).
  md.renderer.rules.math_inline = function (tokens, idx) { return renderTex(tokens[idx].content, false); };
  md.renderer.rules.math_inline_double = function (tokens, idx) {
    return '<span class="sc-math-display">' + renderTex(tokens[idx].content, true) + "</span>";
  };
  md.renderer.rules.math_block = function (tokens, idx) {
    return '<div class="sc-math-display">' + renderTex(tokens[idx].content, true) + "</div>\n";
  };
  md.renderer.rules.math_block_eqno = function (tokens, idx) {
    return '<div class="sc-math-display sc-math-eqno">' + renderTex(tokens[idx].content, true) +
      '<span class="sc-eqno">(' + md.utils.escapeHtml(tokens[idx].info) + ")</span></div>\n";
  };
}
// Footnote ids carry env.docId, so two messages' footnotes never share an id.
if (window.markdownitFootnote) md.use(window.markdownitFootnote);
// Disabled checkboxes: a reply's task list is a picture of one, not a form.
if (window.markdownitTaskLists) md.use(window.markdownitTaskLists, { enabled: false });

// markdown-it aligns table cells with style="text-align:…": a class instead.
md.core.ruler.push("sc_align_classes", function (state) {
  state.tokens.forEach(function (token) {
    if ((token.type !== "th_open" && token.type !== "td_open") || !token.attrs) return;
    var match = /text-align:\s*(left|center|right)/.exec(token.attrGet("style") || "");
    token.attrs = token.attrs.filter(function (attr) { return attr[0] !== "style"; });
    if (match) token.attrJoin("class", "sc-align-" + match[1]);
  });
});

// --- DOMPurify ------------------------------------------------------------------------------

// Our own DOMPurify instance, so hooks never touch a copy the host page uses.
var purify = window.DOMPurify(window);
var PURIFY_CONFIG = {
  // SVG and MathML for KaTeX only: anything of theirs outside KaTeX's output is removed below.
  USE_PROFILES: { html: true, svg: true, mathMl: true },
  ADD_TAGS: ["semantics", "annotation"], // KaTeX's MathML keeps the TeX source for screen readers
  ADD_ATTR: ["data-sc-style", "encoding"],
  ADD_URI_SAFE_ATTR: ["data-sc-style"], // "height:1em" is not a URL with a "height" scheme
  FORBID_TAGS: ["style", "form", "button", "textarea", "select", "option", "iframe",
    "frame", "object", "embed", "base", "meta", "link", "dialog", "template", "foreignobject",
    "use", "image", "a:svg", "animate", "set", "filter", "feimage"],
  FORBID_ATTR: ["style", "srcset", "action", "formaction", "target", "ping", "href:svg", "xlink:href"],
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true
};
purify.addHook("uponSanitizeElement", function (node, data) {
  // The task list plugin's checkboxes are the only inputs a reply may hold.
  if (data.tagName === "input" && node.getAttribute &&
    (node.getAttribute("type") || "").toLowerCase() !== "checkbox") {
    node.parentNode && node.parentNode.removeChild(node);
  }
});
purify.addHook("afterSanitizeAttributes", function (node) {
  if (node.tagName === "A") {
    node.setAttribute("rel", "noopener noreferrer nofollow");
    var href = node.getAttribute("href");
    // A link within the message (a footnote) stays in this tab; messages.js scrolls to it.
    if (href != null && href.charAt(0) !== "#") node.setAttribute("target", "_blank");
  } else if (node.tagName === "INPUT") {
    node.setAttribute("disabled", "");
    node.removeAttribute("name");
    node.removeAttribute("id");
  } else if (node.tagName === "IMG") {
    // Only images of this site (or data: URLs) load; the CSP says the same (img-src 'self' data:).
    var src = node.getAttribute("src") || "";
    if (!isLocalImage(src)) {
      node.setAttribute("data-sc-blocked", src);
      node.removeAttribute("src");
    }
  }
});

function isLocalImage(src) {
  if (/^data:image\/(png|gif|jpe?g|webp);/i.test(src)) return true;
  try { return new URL(src, location.href).origin === location.origin; } catch (e) { return false; }
}

// The properties and values KaTeX writes in its style attributes (lengths, colours, a border).
var KATEX_PROPERTIES = /^(?:height|width|min-width|top|bottom|left|margin-left|margin-right|padding-left|vertical-align|position|color|background-color|border|border-style|border-color|border-width|border-(?:top|bottom|right)-width)$/;
var KATEX_VALUE = /^(?:-?(?:\d+\.?\d*|\.\d+)(?:em|ex|pt|px|%)?|#[0-9a-f]{3,8}|[a-z]+)(?: (?:-?(?:\d+\.?\d*|\.\d+)(?:em|ex|pt|px|%)?|#[0-9a-f]{3,8}|[a-z]+))*$/i;

function applyMathStyles(fragment) {
  fragment.querySelectorAll("[data-sc-style]").forEach(function (el) {
    var css = el.getAttribute("data-sc-style") || "";
    el.removeAttribute("data-sc-style");
    if (!el.closest("." + MATH_CLASS)) return;
    css.split(";").forEach(function (declaration) {
      var colon = declaration.indexOf(":");
      if (colon < 0) return;
      var property = declaration.slice(0, colon).trim().toLowerCase();
      var value = declaration.slice(colon + 1).trim();
      if (!KATEX_PROPERTIES.test(property) || !KATEX_VALUE.test(value)) return;
      if (property === "position" && value !== "relative") return;
      el.style.setProperty(property, value);
    });
  });
  // markdown-it cannot produce SVG or MathML (raw HTML is off): only KaTeX may.
  fragment.querySelectorAll("svg, math").forEach(function (el) {
    if (!el.parentElement || !el.parentElement.closest("." + MATH_CLASS)) el.remove();
  });
}

// A code block's frame, from the page (chat.html, so its button's label is translated there).
var codeTemplate = document.getElementById("sc-tpl-code");

/** Markdown text → sanitised DocumentFragment, with copy buttons on code blocks. */
export function markdown(text, options) {
  options = options || {};
  var source = options.streaming ? streamingText(text) : text;
  var env = options.docId ? { docId: String(options.docId) } : {};
  var fragment = purify.sanitize(md.render(source, env), PURIFY_CONFIG);
  applyMathStyles(fragment);
  fragment.querySelectorAll("img[data-sc-blocked]").forEach(function (img) {
    var note = document.createElement("span");
    note.className = "sc-blocked-image";
    var url = img.getAttribute("data-sc-blocked");
    var host = "";
    try { host = new URL(url, location.href).host; } catch (e) { host = url; }
    note.textContent = interpolate(gettext("[image %(alt)s from %(host)s not loaded]"),
      { alt: img.getAttribute("alt") || "", host: host }, true);
    img.replaceWith(note);
  });
  fragment.querySelectorAll("pre").forEach(function (pre) {
    // <div class="sc-code"><div class="sc-code-bar"><span>python</span><button>Copy code</button>
    var wrap = codeTemplate.content.firstElementChild.cloneNode(true);
    var bar = wrap.firstElementChild;
    var code = pre.querySelector("code");
    var match = code && /(?:^|\s)language-([\w+#.-]+)/.exec(code.className);
    bar.querySelector("span").textContent = match ? match[1] : "";
    pre.replaceWith(wrap);
    wrap.append(pre);
  });
  return fragment;
}

// --- streaming: never show half a construct raw ---------------------------------------------

var FENCE_OPEN = /^\s*(`{3,}|~{3,})/;

/**
 * The text to render while a reply is still arriving: a copy whose unfinished tail is closed
 * (an open code fence, `**bold`, `` `code ``) or held back (a table before its delimiter row,
 * `[text](` of a link, `$$`/`\[`/`\(`/`$` math not closed yet, a footnote reference before its
 * note), so nothing shows as raw Markdown for a moment and then jumps into shape. The final text
 * is rendered as it is.
 */
export function streamingText(text) {
  var lines = text.split("\n");
  var fence = null;
  for (var i = 0; i < lines.length; i++) {
    var line = lines[i];
    if (fence) {
      var close = /^\s*(`{3,}|~{3,})\s*$/.exec(line);
      if (close && close[1][0] === fence[0] && close[1].length >= fence.length) fence = null;
      continue;
    }
    var open = FENCE_OPEN.exec(line);
    // A backtick fence's info string cannot hold a backtick.
    if (open && !(open[1][0] === "`" && line.slice(open[0].length).indexOf("`") >= 0)) fence = open[1];
  }
  if (fence) {
    // Inside a code block: drop a closing fence being typed, then close the block.
    if (lines.length > 1 && /^\s*(`+|~+)\s*$/.test(lines[lines.length - 1]) &&
      lines[lines.length - 1].trim()[0] === fence[0]) lines.pop();
    return lines.join("\n") + "\n" + fence;
  }
  text = holdBackMath(text);
  lines = text.split("\n");
  var last = lines.length - 1;
  // A fence opener being typed (`` ` `` or ``` `` ```), a setext underline that could still be a
  // list item or a rule.
  if (/^\s*(`{1,2}|~{1,2})$/.test(lines[last]) ||
    (last > 0 && lines[last - 1].trim() && /^ {0,3}(-+|=+) *$/.test(lines[last]))) {
    lines[last] = "";
  }
  holdBackTable(lines);
  lines = hideUndefinedFootnotes(lines.join("\n")).split("\n");
  last = lines.length - 1;
  lines[last] = closeInline(lines[last]);
  return lines.join("\n");
}

/** Cuts the text at math that is not closed yet: `$$`, `\[`, `\(`, or a `$` that opens math. */
function holdBackMath(text) {
  var outside = text.replace(/(`+)[\s\S]*?\1/g, function (code) { return " ".repeat(code.length); });
  var cut = text.length;
  var doubles = [];
  outside.replace(/(^|[^\\])\$\$/g, function (match, before, at) { doubles.push(at + before.length); return match; });
  if (doubles.length % 2) cut = Math.min(cut, doubles[doubles.length - 1]);
  [["\\[", "\\]"], ["\\(", "\\)"]].forEach(function (pair) {
    var opened = outside.lastIndexOf(pair[0]);
    if (opened >= 0 && outside.indexOf(pair[1], opened) < 0) cut = Math.min(cut, opened);
  });
  // A single `$` on the last line that opens math (next character not a space or a digit, as
  // texmath requires) and is not closed yet. Prices ("$5") never hold text back.
  var lineStart = outside.lastIndexOf("\n") + 1;
  var singles = [];
  outside.slice(lineStart).replace(/\$+/g, function (run, at) {
    if (run.length === 1 && outside.charAt(lineStart + at - 1) !== "\\") singles.push(lineStart + at);
    return run;
  });
  if (singles.length % 2) {
    var opener = singles[singles.length - 1];
    // At the very end it may yet become `$$` or `$x`.
    if (opener === outside.length - 1 || /[^\s\d]/.test(outside.charAt(opener + 1))) cut = Math.min(cut, opener);
  }
  return text.slice(0, cut);
}

function cells(row) {
  return row.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").length;
}

/** Holds back a table until its header and delimiter row are complete. */
function holdBackTable(lines) {
  var end = lines.length;
  if (end > 1 && lines[end - 1] === "") end -= 1;
  var start = end;
  while (start > 0 && /^\s*\|/.test(lines[start - 1])) start -= 1;
  if (start === end) return;
  var isTable = end - start >= 2 &&
    /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/.test(lines[start + 1]) &&
    cells(lines[start + 1]) === cells(lines[start]);
  if (!isTable) lines.splice(start, lines.length - start, "");
}

function hideUndefinedFootnotes(text) {
  return text.replace(/\[\^([^\]\s]+)\](?!:)/g, function (ref, label) {
    return text.indexOf("[^" + label + "]:") >= 0 ? ref : "";
  });
}

/** Code spans of a line: the closed ones' ranges, and the run of one still open. */
function codeSpans(line) {
  var ranges = [];
  var open = null;
  line.replace(/\\.|`+/g, function (run, at) {
    if (run[0] !== "`") return run;
    if (open && open.run === run) { ranges.push([open.at, at + run.length]); open = null; }
    else if (!open) open = { run: run, at: at };
    return run;
  });
  return { ranges: ranges, open: open };
}

function inRanges(ranges, at) {
  return ranges.some(function (r) { return at >= r[0] && at < r[1]; });
}

/** Closes the inline constructs a line leaves open: code spans, emphasis, links being typed. */
function closeInline(line) {
  var spans = codeSpans(line);
  if (!spans.open) {
    // A link whose destination is still arriving shows as its text; an image, not at all; a
    // footnote reference being typed, not at all (a complete one waits for its note).
    var link = /(!?)\[([^\[\]]*)(\](\([^()\s]*)?)?$/.exec(line);
    if (link && !inRanges(spans.ranges, link.index)) {
      var footnote = link[2][0] === "^";
      if (!(footnote && link[3] === "]")) {
        line = line.slice(0, link.index) + (link[1] || footnote ? "" : link[2]);
      }
    }
    spans = codeSpans(line);
  }
  var codeCloser = "";
  if (spans.open) {
    if (!line.slice(spans.open.at + spans.open.run.length).trim()) line = line.slice(0, spans.open.at);
    else { spans.ranges.push([spans.open.at, line.length]); codeCloser = spans.open.run; }
  }
  if (!codeCloser) line = line.replace(/\s+$/, "");
  return closeEmphasis(line, spans.ranges, codeCloser);
}

function isSpace(ch) { return !ch || /\s/.test(ch); }
function isPunct(ch) { return !!ch && /[!-\/:-@\[-`{-~\u2000-\u206f\u2e00-\u2e7f]/.test(ch); }

/** Emphasis delimiters (`*`, `_`, `~~`) still open at the end of a line are closed, roughly as
 * CommonMark pairs them; one that opens nothing yet is dropped. ``inner`` closes a code span
 * first. */
function closeEmphasis(line, code, inner) {
  var stack = [];
  var re = /\\.|\*+|_+|~~+/g;
  var match;
  while ((match = re.exec(line))) {
    var run = match[0];
    var at = match.index;
    if (run[0] === "\\" || inRanges(code, at)) continue;
    var before = line.charAt(at - 1);
    var after = line.charAt(at + run.length);
    var left = !isSpace(after) && (!isPunct(after) || isSpace(before) || isPunct(before));
    var right = !isSpace(before) && (!isPunct(before) || isSpace(after) || isPunct(after));
    var canOpen = run[0] === "_" ? left && (!right || isPunct(before)) : left;
    var canClose = run[0] === "_" ? right && (!left || isPunct(after)) : right;
    var atEnd = at + run.length === line.length;
    var opener = -1;
    for (var i = stack.length - 1; i >= 0; i--) if (stack[i].run[0] === run[0]) { opener = i; break; }
    if (canClose && opener >= 0) {
      var wanted = stack[opener].run;
      if (atEnd && run.length < wanted.length) {
        // A closer still being typed (`**bold*`): complete it.
        line = line.slice(0, at) + wanted;
        stack.splice(opener);
        break;
      }
      if (run.length >= wanted.length) stack.splice(opener);
      else stack[opener].run = wanted.slice(run.length);
    } else if (canOpen) {
      stack.push({ run: run, at: at });
    } else if (atEnd && !canClose) {
      line = line.slice(0, at).replace(/\s+$/, "");
    }
  }
  // Openers with nothing after them yet are dropped; the others are closed, innermost first.
  while (stack.length && !line.slice(stack[stack.length - 1].at + stack[stack.length - 1].run.length).trim()) {
    line = line.slice(0, stack.pop().at).replace(/\s+$/, "");
  }
  line += inner;
  for (var j = stack.length - 1; j >= 0; j--) line += stack[j].run;
  return line;
}

// --- plain text of Markdown (titles) --------------------------------------------------------

/** The text of some Markdown without its markup: "**Pelicans** and `code`" → "Pelicans and code". */
export function plainText(source) {
  var out = [];
  (function walk(tokens) {
    tokens.forEach(function (token) {
      if (token.children) walk(token.children);
      else if (token.type === "softbreak" || token.type === "hardbreak") out.push(" ");
      else if (token.type === "text" || token.type === "code_inline" || token.type === "fence" ||
        token.type === "code_block" || /^math_/.test(token.type)) out.push(token.content);
      if (token.block && /_close$|^fence$|^code_block$|^math_block/.test(token.type)) out.push(" ");
    });
  })(md.parse(source || "", {}));
  return out.join("").replace(/\s+/g, " ").trim();
}

window.streamchatRender = { markdown: markdown, streamingText: streamingText, plainText: plainText };

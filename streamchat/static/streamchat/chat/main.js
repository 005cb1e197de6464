/* streamchat chat page: native ES modules, no build step. This one wires them and starts.
 *
 * Talks to the server over one websocket (docs/protocol.md, protocol v1) and a small JSON API
 * (docs/ui.md). Guarantees kept by the modules:
 * - Model output is rendered as Markdown with raw HTML off (markdown-it) and the whole HTML is
 *   sanitised with DOMPurify on every render (render.js); text never reaches innerHTML
 *   unsanitised, and the page's own elements are cloned from <template>s in chat.html.
 * - Deltas only append to a string; the DOM is rendered at most once per animation frame.
 * - Offsets count code points. A reply that was streaming is resumed from the offset held, after a
 *   reconnect or a reload; overlaps are dropped, gaps are asked for again.
 * - A typed message is kept (in the page and in localStorage) until the server acknowledges it.
 *
 * Modules import only modules below them (main → replies → conversations/composer → messages →
 * socket/render/tree/…), never in a cycle: ManifestStaticFilesStorage can then hash each file
 * after the files it imports (docs/ui.md).
 */
import { config } from "./page.js";
import { refreshAllPending, renderThread, wireThread } from "./messages.js";
import { focusOpened, loadList, openConversation, wireConversations } from "./conversations.js";
import { wireComposer } from "./composer.js";
import { noteFrame, wireAttachments } from "./attachments.js";
import { wireSidebar } from "./sidebar.js";
import { wireShortcuts } from "./shortcuts.js";
import { handleFrame, onOpened } from "./replies.js";
import { connect, hooks, reconnectNow, retryNow } from "./socket.js";

// The tray sees an ack or refusal of a send with attachments while the send is still pending.
hooks.frame = (frame) => { noteFrame(frame); handleFrame(frame); };
hooks.opened = onOpened;
hooks.closed = refreshAllPending;

wireThread();
wireComposer();
wireAttachments();
wireConversations();
wireSidebar();
wireShortcuts();
window.addEventListener("online", retryNow);
document.addEventListener("visibilitychange", () => { if (!document.hidden) reconnectNow(); });

if (config.conversation != null) openConversation(config.conversation);
else { renderThread(); focusOpened(); }
loadList();
connect();

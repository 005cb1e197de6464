/* Translations: Django's JavaScript catalog (the page loads `jsi18n/`, a deferred classic script,
 * before its modules) defines gettext(), ngettext() and interpolate() as globals. Modules import
 * them from here, so `makemessages -d djangojs` finds every call, and a page without the catalog
 * (a host's template that drops it) still works, in English. */

const identity = (text) => text;

export const gettext = window.gettext || identity;

export const ngettext = window.ngettext || ((singular, plural, count) => (count === 1 ? singular : plural));

/** interpolate("%(n)s left", {n: 2}, true), or with a list for "%s". */
export const interpolate = window.interpolate || ((format, values, named) => (named
  ? format.replace(/%\(\w+\)s/g, (match) => String(values[match.slice(2, -2)]))
  : format.replace(/%s/g, () => String(values.shift()))));

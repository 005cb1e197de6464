"""Static files storage for production: Django's ManifestStaticFilesStorage, also rewriting the
``import … from "./x.js";`` lines of JavaScript modules to the hashed names.

The chat page's scripts are native ES modules (``static/streamchat/chat/``) that import each other
by relative paths. Plain ``ManifestStaticFilesStorage`` hashes each file's name but leaves those
paths alone, so the hashed ``main.<hash>.js`` would load the unhashed siblings, which a server or
CDN may cache across a deploy (an old module with a new one). With
``support_js_module_import_aggregation`` on, each module names its imports' hashed files, so a
page always loads one consistent set. Set it as the host's ``STORAGES["staticfiles"]`` backend,
or set the same attribute on a storage class of your own (e.g. a subclass of ServeStatic's
``CompressedManifestStaticFilesStorage``). Check ``streamchat.W030`` says when it is missing.
"""

from __future__ import annotations

from django.contrib.staticfiles import storage


class ManifestStaticFilesStorage(storage.ManifestStaticFilesStorage):
    support_js_module_import_aggregation = True

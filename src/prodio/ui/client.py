"""What the Python side knows about the browser side (``static/prodio.js``)."""

from __future__ import annotations

# A client-side event handler (no server round trip) for Logout buttons. prodio.js posts
# the logout form with the CSRF token; without it, the confirmation page still works.
LOGOUT_JS = (
    "() => { if (window.prodio && window.prodio.logout) { window.prodio.logout(); } "
    "else { window.location.assign('/logout'); } }"
)

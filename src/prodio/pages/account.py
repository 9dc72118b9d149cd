"""Account: who is signed in, since when, until when; the ways to change the password and
to see and end one's sessions; and the Logout button."""

from __future__ import annotations

import time

import gradio as gr

from prodio.middleware.auth import PASSWORD_CHANGE_PATH
from prodio.pages.base import Tab
from prodio.routes.account import SESSIONS_PATH
from prodio.session.base import Session
from prodio.ui.client import LOGOUT_JS
from prodio.ui.format import escape_markdown, format_duration, format_utc
from prodio.ui.state import SessionGone, UserState, request_state_value, user_facing_errors


def describe_session(user: str, session: Session, now: float) -> str:
    """The account summary as Markdown."""
    idle_left = session.idle_expires_at - now
    absolute_left = session.absolute_expires_at - now
    rows = [
        ("Signed in as", f"**{escape_markdown(user)}**"),
        ("Session started", format_utc(session.created_at)),
        ("Last activity", format_utc(session.last_seen)),
        (
            "Signs out when idle at",
            f"{format_utc(session.idle_expires_at)} (in {format_duration(idle_left)})",
        ),
        (
            "Session ends at the latest",
            f"{format_utc(session.absolute_expires_at)} (in {format_duration(absolute_left)})",
        ),
    ]
    table = "| Session | |\n|---|---|\n" + "\n".join(
        f"| {name} | {value} |" for name, value in rows
    )
    return (
        table + "\n\nEvery action in the app counts as activity. A minute before you would be "
        "signed out for inactivity, a notice lets you stay signed in."
    )


def page_link(label: str, path: str, *, min_width: int, elem_id: str) -> gr.Button:
    """A button that opens one of prodio's own pages in this tab: a plain link, not a Gradio
    event, since those pages are server-rendered forms with their CSRF tokens, which work
    without scripts."""
    return gr.Button(
        label,
        link=path,
        link_target="_self",
        variant="secondary",
        scale=0,
        min_width=min_width,
        elem_id=elem_id,
    )


class AccountTab(Tab):
    """The signed-in user and their session times, links to change the password and to
    see and end the user's sessions, and a Logout button."""

    title = "Account"
    slug = "account"

    def build(self, state: UserState) -> None:
        summary = gr.Markdown(elem_id="account-summary", elem_classes=["prodio-panel"])
        with gr.Row(elem_classes=["prodio-actions"]):
            refresh = gr.Button("Refresh", variant="secondary", scale=0, min_width=120)
            page_link(
                "Change password",
                PASSWORD_CHANGE_PATH,
                min_width=160,
                elem_id="account-change-password",
            )
            page_link("Your sessions", SESSIONS_PATH, min_width=140, elem_id="account-sessions")
            logout = gr.Button("Log out", variant="stop", scale=0, min_width=120)
        refresh.click(
            self.summary, inputs=None, outputs=[summary], **self.event(api_name="account_refresh")
        )
        logout.click(None, inputs=None, outputs=None, js=LOGOUT_JS, **self.event())
        self.on_page_load(self.summary, outputs=[summary], api_name="account_summary")

    @user_facing_errors
    async def summary(self, request: gr.Request) -> str:
        """Markdown describing the current session, from what the middleware loaded."""
        user = request_state_value(request, "user")
        session = request_state_value(request, "session")
        if not isinstance(user, str) or not isinstance(session, Session):
            raise SessionGone("the request carries no signed-in user")
        return describe_session(user, session, time.time())

"""The sidebar: search and the saved conversations, with rename and delete (each asks in a
dialog first). Opening one is the screen's (``ListView.Selected`` reaches it)."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input

from llcuda_tui.core.chat import ChatSession
from llcuda_tui.core.conversations import Conversation
from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.screens.dialogs import ConfirmDialog, TextPromptDialog
from llcuda_tui.widgets import ConversationList


class Sidebar(Vertical):
    """The session's conversations, filtered by the search field; the open one highlighted.
    Its footer keys (the list adds Delete and Rename) act on the screen."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+f", "screen.search", "Search", tooltip="Filter the saved chats"),
        Binding("ctrl+s", "screen.export", "Export", tooltip="The open chat as Markdown"),
    ]

    class OpenDeleted(Message):
        """The open conversation was deleted: none is open now."""

    def __init__(self, session: ChatSession, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.session = session

    def compose(self) -> ComposeResult:
        yield Input(placeholder="search conversations", id="search")
        yield ConversationList(id="conversations")

    def show_conversations(self) -> None:
        """List the conversations that match the search (the open one highlighted)."""
        query = self.query_one("#search", Input).value
        conv = self.session.conversation
        found = self.session.store.conversations(query)
        self.query_one(ConversationList).set_conversations(found, conv.id if conv else None)

    def focus_search(self) -> None:
        self.query_one("#search", Input).focus()

    @on(Input.Changed, "#search")
    def search_changed(self) -> None:
        self.show_conversations()

    @on(ConversationList.RenameRequested)
    def rename_requested(self, message: ConversationList.RenameRequested) -> None:
        self.rename(message.conversation)

    def rename(self, conv: Conversation) -> None:
        def done(title: str | None) -> None:
            if not title:
                return
            try:
                self.session.rename(conv.id, title)
            except LlcudaError as exc:
                self.notify(str(exc), severity="error")
                return
            self.show_conversations()

        self.app.push_screen(TextPromptDialog("Rename the conversation", conv.title), done)

    @on(ConversationList.DeleteRequested)
    def delete_requested(self, message: ConversationList.DeleteRequested) -> None:
        self.delete(message.conversation)

    def delete(self, conv: Conversation) -> None:
        """Delete ``conv`` once the dialog says yes (it starts on No)."""
        if self._refused(conv):
            return

        def done(yes: bool | None) -> None:
            if not yes or self._refused(conv):  # a reply may have started meanwhile
                return
            if self.session.delete(conv.id):
                self.post_message(self.OpenDeleted())
            self.show_conversations()
            self.notify(f"deleted '{conv.title}'")

        question = f"Delete '{conv.title}' and its messages?"
        self.app.push_screen(ConfirmDialog(question, yes="Delete", destructive=True), done)

    def _refused(self, conv: Conversation) -> bool:
        why = self.session.why_not_delete(conv.id)
        if why is not None:
            self.notify(why, severity="warning")
        return why is not None

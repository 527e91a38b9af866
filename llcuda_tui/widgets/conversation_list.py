"""The saved conversations, newest first; Delete and F2 act on the highlighted one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Label, ListItem, ListView

from llcuda_tui.core.conversations import Conversation


class ConversationItem(ListItem):
    def __init__(self, conversation: Conversation) -> None:
        super().__init__(Label(conversation.title, markup=False))
        self.conversation = conversation


class ConversationList(ListView):
    """Conversations; Enter opens one (``ListView.Selected``)."""

    DEFAULT_CSS = """
    ConversationList { height: 1fr; }
    ConversationList > ConversationItem { padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("delete", "delete_conversation", "Delete"),
        Binding("r", "rename_conversation", "Rename"),
    ]

    @dataclass
    class DeleteRequested(Message):
        conversation: Conversation

    @dataclass
    class RenameRequested(Message):
        conversation: Conversation

    def set_conversations(self, conversations: list[Conversation], current_id: int | None) -> None:
        self.clear()
        self.extend(ConversationItem(c) for c in conversations)
        ids = [c.id for c in conversations]
        if current_id in ids:
            self.call_after_refresh(setattr, self, "index", ids.index(current_id))

    def _highlighted(self) -> Conversation | None:
        item = self.highlighted_child
        return item.conversation if isinstance(item, ConversationItem) else None

    def action_delete_conversation(self) -> None:
        conv = self._highlighted()
        if conv is not None:
            self.post_message(self.DeleteRequested(conv))

    def action_rename_conversation(self) -> None:
        conv = self._highlighted()
        if conv is not None:
            self.post_message(self.RenameRequested(conv))

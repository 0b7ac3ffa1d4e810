import asyncio

from textual.app import App

from gpt2_chat.app.confirm import ConfirmScreen


class _Host(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.answers: list[bool | None] = []

    def ask(self) -> None:
        self.push_screen(ConfirmScreen("Discard it?", yes="Discard"), self.answers.append)


def test_escape_answers_no_and_yes_needs_a_deliberate_key() -> None:
    app = _Host()
    asyncio.run(_drive(app))
    assert app.answers == [False, False, True]


async def _drive(app: _Host) -> None:
    async with app.run_test() as pilot:
        app.ask()
        await pilot.pause()
        await pilot.press("enter")  # focus starts on No
        app.ask()
        await pilot.pause()
        await pilot.press("escape")
        app.ask()
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()

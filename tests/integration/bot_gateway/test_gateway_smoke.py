from support.gateway_harness import Stack, new_user


async def test_start(stack: Stack) -> None:
    user = new_user("ru")
    stack.telegram.say(user, "/start")
    welcome = await stack.telegram.wait_for(user.id, "Ваш баланс: 60")
    assert "Приветственный подарок: 60" in welcome.text

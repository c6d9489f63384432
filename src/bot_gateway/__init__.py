"""Bot gateway: the Telegram bot (aiogram 3) users talk to."""

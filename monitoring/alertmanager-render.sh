#!/bin/sh
# alertmanager-render.sh IN OUT: IN (alertmanager.yml) with its telegram bot_token and chat_id
# set from ALERTS_TELEGRAM_BOT_TOKEN and ALERTS_TELEGRAM_CHAT_ID, written to OUT (mode 600).
# Alertmanager 0.25 has no bot_token_file and no environment expansion; this is the step
# compose.yaml runs before it. Runs on busybox sh (the prom/alertmanager image).
set -eu
token=${ALERTS_TELEGRAM_BOT_TOKEN:?set ALERTS_TELEGRAM_BOT_TOKEN: the token of the bot that posts alerts}
chat=${ALERTS_TELEGRAM_CHAT_ID:?set ALERTS_TELEGRAM_CHAT_ID: the operators chat id (e.g. -100...)}
case $token in
    *[!0-9A-Za-z:_-]* | *[!0-9]*:* | :*) echo "ALERTS_TELEGRAM_BOT_TOKEN is no bot token" >&2; exit 1 ;;
esac
case ${chat#-} in
    "" | *[!0-9]*) echo "ALERTS_TELEGRAM_CHAT_ID is no chat id (an integer)" >&2; exit 1 ;;
esac
umask 077
sed -e "s|^\( *- bot_token:\).*|\1 \"$token\"|" -e "s|^\( *chat_id:\).*|\1 $chat|" "$1" > "$2"
if grep -q "placeholder-replaced-at-start" "$2"; then
    echo "alertmanager-render.sh: no telegram bot_token line in $1 to fill" >&2
    exit 1
fi

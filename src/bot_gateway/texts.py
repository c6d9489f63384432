"""Every user-visible sentence, through gettext (`locales/`); callers pick the locale.

Message ids are English; `ru` is the default locale and `en` translates to itself, so a test can
insist that every id has a translation in both.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from aiogram.utils.i18n import get_i18n, ngettext
from aiogram.utils.i18n import gettext as _
from babel.numbers import format_decimal

from bot_gateway.domain import GRANT_MAX_CREDITS, GRANT_REASON_MAX_LENGTH

QUOTE_MAX_LENGTH = 3500
"""A confirmation quotes the prompt whole up to this (a Telegram message holds 4,096)."""

REJECT_REASONS = ("unknown_preset", "missing_image", "prompt_too_long", "active_jobs_cap")


def menu_buttons() -> dict[str, str]:
    return {
        "catalog": _("🎨 Presets"),
        "prompt": _("✍️ Own prompt"),
        "balance": _("💰 Balance"),
        "topup": _("➕ Top up"),
        "history": _("🕘 History"),
        "help": _("❓ Help"),
        "language": _("🌐 Language"),
    }


LANGUAGE_NAMES = {"ru": "🇷🇺 Русский", "en": "🇬🇧 English"}
"""Each language by its own name, whatever the language of the menu showing it."""


def choose_language() -> str:
    return _("Choose the language:")


def language_chosen() -> str:
    """Said in the language just chosen."""
    return _("Done: I will speak English from now on.")


def commands() -> list[tuple[str, str]]:
    """The command menu beside the input field: each command and what it does."""
    return [
        ("start", _("Main menu")),
        ("balance", _("Your balance")),
        ("topup", _("Top up the balance")),
        ("history", _("Recent images and payments")),
        ("cancel", _("Cancel a dialogue or an image in progress")),
        ("help", _("How it works")),
        ("paysupport", _("Help with a payment")),
        ("receipt", _("Email or phone for receipts")),
        ("terms", _("Terms of service")),
        ("privacy", _("Privacy policy")),
        ("deletemydata", _("Delete my data")),
    ]


def credits_amount(value: Decimal | int) -> str:
    """A balance as the user's language writes it: whole credits as they are (`60`), an
    adopted account's fraction to the millionth it holds, with the language's decimal sign
    (`12,5` in Russian, `12.5` in English); no digit grouping, as before."""
    return format_decimal(value, format="0.######", locale=get_i18n().current_locale)


def count(value: Decimal | int) -> int:
    """The number that picks a noun's plural form (`ngettext`): a fraction reads as 2 does
    (`12,5 кредита`, `12.5 credits`)."""
    return int(value) if value == int(value) else 2


def welcome(name: str, balance: Decimal | int, welcome_credits: Decimal | int | None) -> str:
    text = _("Hello, {name}! I edit photos and draw new images.").format(name=name)
    if welcome_credits:
        gift = credits_amount(welcome_credits)
        text += "\n" + ngettext(
            "Welcome gift: {credits} credit.",
            "Welcome gift: {credits} credits.",
            count(welcome_credits),
        ).format(credits=gift)
    return text + "\n" + balance_line(balance)


def balance_line(balance: Decimal | int) -> str:
    return ngettext(
        "Your balance: {balance} credit.", "Your balance: {balance} credits.", count(balance)
    ).format(balance=credits_amount(balance))


def help_text() -> str:
    return _(
        "How it works:\n"
        "1. Send a photo (as a photo or as a file: JPEG, PNG or WebP).\n"
        "2. Pick a preset, or describe the change in your own words.\n"
        "3. Confirm: the price is taken from your balance only when the work starts, "
        "and returned if it fails.\n\n"
        "Commands: /start menu, /balance, /topup, /history, /cancel, /help."
    )


def menu_prompt() -> str:
    return _("What shall we do?")


def choose_category() -> str:
    return _("Choose a category:")


def catalog_empty() -> str:
    return _("The catalog is empty for now. Please try again later.")


def choose_preset(category: str) -> str:
    return _("{category}: choose a preset.").format(category=category)


def back() -> str:
    return _("⬅️ Back")


def ask_photo(title: str) -> str:
    return _("Send a photo for «{title}» (as a photo or as a file: JPEG, PNG or WebP).").format(
        title=title
    )


def ask_prompt(limit: int) -> str:
    return _("Describe what to do with the image (up to {limit} characters).").format(limit=limit)


def photo_received() -> str:
    return _("Photo received. Choose a preset, or describe the change in your own words.")


def album_received(count: int) -> str:
    return _(
        "{count} photos received, to edit together. Choose a preset, or describe the change in "
        "your own words (say which photo is which: the first, the second...)."
    ).format(count=count)


def album_too_large(count: int, limit: int) -> str:
    return _(
        "That is {count} photos: one request edits up to {limit} together (a person and a "
        "product, a face and a style). Send up to {limit} in one album."
    ).format(count=count, limit=limit)


def prompt_received() -> str:
    return _("Got it. Send a photo to edit, or draw a new image from the text.")


def text_offered(text: str) -> str:
    quoted = text if len(text) <= QUOTE_MAX_LENGTH else text[:QUOTE_MAX_LENGTH] + "…"
    return _("«{text}»\nDraw this? Or send a photo to edit with these words.").format(text=quoted)


def prompt_noted(text: str) -> str:
    quoted = text if len(text) <= QUOTE_MAX_LENGTH else text[:QUOTE_MAX_LENGTH] + "…"
    return _("Noted: «{text}». Now send a photo.").format(text=quoted)


def generate_button() -> str:
    return _("🖼 Draw from text")


def own_prompt_title() -> str:
    return _("Own prompt")


def confirm(title: str, price: int, prompt: str | None = None, *, photos: int = 1) -> str:
    """The offer to pay for: what, for how much, the user's own words it will follow, and how
    many photos (an album's) it edits together."""
    text = ngettext(
        "«{title}»\nPrice: {price} credit.\nStart?",
        "«{title}»\nPrice: {price} credits.\nStart?",
        count(price),
    ).format(title=title, price=price)
    if photos > 1:
        text = _("Photos: {count}").format(count=photos) + "\n" + text
    if prompt:
        quoted = prompt if len(prompt) <= QUOTE_MAX_LENGTH else prompt[:QUOTE_MAX_LENGTH] + "…"
        text = _("Prompt: «{prompt}»").format(prompt=quoted) + "\n" + text
    return text


def start_button() -> str:
    return _("✅ Start")


def cancel_button() -> str:
    return _("✖️ Cancel")


def accepted(title: str) -> str:
    return _("⏳ «{title}»: accepted, waiting for payment and a place in the queue.").format(
        title=title
    )


def retried(title: str) -> str:
    return _(
        "🔁 «{title}»: support restarted your failed request, at no charge. "
        "Its progress and the result come here as usual."
    ).format(title=title)


def retried_title() -> str:
    """The title of a restarted request whose first one the bot no longer holds."""
    return _("Your earlier request")


def queued(title: str, position: int, eta_seconds: int) -> str:
    if eta_seconds < 60:
        eta = _("less than a minute")
    else:
        eta = _("about {minutes} min").format(minutes=round(eta_seconds / 60))
    return _("⏳ «{title}»: in the queue, position {position}, {eta}.").format(
        title=title, position=position, eta=eta
    )


def held(title: str) -> str:
    return _(
        "⏸ «{title}»: paid and waiting: this kind of processing is paused for a while. "
        "The job keeps its place and starts once it resumes."
    ).format(title=title)


def started(title: str) -> str:
    return _("⚙️ «{title}»: started.").format(title=title)


def progress(title: str, step: int, total: int) -> str:
    return _("⚙️ «{title}»: step {step} of {total}.").format(title=title, step=step, total=total)


def done(title: str) -> str:
    return _("✅ «{title}»: done.").format(title=title)


def result_caption(title: str) -> str:
    return _("«{title}» is ready.").format(title=title)


def result_buttons() -> dict[str, str]:
    return {
        "again": _("🔁 Again"),
        "another": _("🎨 Another preset"),
        "file": _("🖼 Original quality"),
        "menu": _("🏠 Menu"),
    }


def result_file_caption(title: str) -> str:
    return _("«{title}» in original quality.").format(title=title)


def result_not_kept(days: int) -> str:
    return _("This result is no longer kept: results are kept for {days} days.").format(days=days)


def failed(title: str, price: int | None) -> str:
    if price:
        return ngettext(
            "❌ «{title}»: the image could not be made. The {price} credit goes back to your "
            "balance.",
            "❌ «{title}»: the image could not be made. "
            "The {price} credits go back to your balance.",
            count(price),
        ).format(title=title, price=price)
    return _("❌ «{title}»: the image could not be made. Nothing was charged.").format(title=title)


def canceled(title: str) -> str:
    return _("✖️ «{title}»: canceled. Anything charged goes back to your balance.").format(
        title=title
    )


def refunded(amount: int, balance: Decimal) -> str:
    return ngettext(
        "↩️ {amount} credit returned. Balance: {balance}.",
        "↩️ {amount} credits returned. Balance: {balance}.",
        count(amount),
    ).format(amount=amount, balance=credits_amount(balance))


def insufficient(title: str, price: int, balance: Decimal, shortfall: Decimal) -> str:
    return _(
        "Not enough credits for «{title}»: it costs {price}, you have {balance}, "
        "{shortfall} short. Nothing was charged."
    ).format(
        title=title,
        price=price,
        balance=credits_amount(balance),
        shortfall=credits_amount(shortfall),
    )


def topup_button() -> str:
    return _("➕ Top up")


def rejected(title: str, reason: str, price: int | None = None) -> str:
    if reason == "price_changed" and price is not None:
        why = ngettext(
            "the price has changed since you confirmed it: it is {price} credit now.",
            "the price has changed since you confirmed it: it is {price} credits now.",
            count(price),
        ).format(price=price)
    else:
        why = {
            "unknown_preset": _("this preset is no longer available."),
            "missing_image": _("this preset needs a photo."),
            "prompt_too_long": _("the description is too long."),
            "active_jobs_cap": _("you already have too many images in progress; wait for one."),
        }.get(reason, _("the request could not be accepted."))
    return _("❌ «{title}»: {why} Nothing was charged.").format(title=title, why=why)


def choose_package() -> str:
    return _("Choose a package:")


def package_button(credits: int, rubles: str) -> str:
    return ngettext(
        "{credits} credit for {rubles} ₽", "{credits} credits for {rubles} ₽", count(credits)
    ).format(credits=credits, rubles=rubles)


def stars_package_button(credits: int, stars: int) -> str:
    return ngettext(
        "{credits} credit for {stars} ⭐", "{credits} credits for {stars} ⭐", count(credits)
    ).format(credits=credits, stars=stars)


def stars_invoice_title(credits: int) -> str:
    return ngettext("{credits} credit", "{credits} credits", count(credits)).format(credits=credits)


def stars_invoice_description(credits: int) -> str:
    return ngettext(
        "Balance top-up: {credits} credit for image edits, paid in Telegram Stars.",
        "Balance top-up: {credits} credits for image edits, paid in Telegram Stars.",
        count(credits),
    ).format(credits=credits)


def stars_refused_package() -> str:
    return _("This package is no longer offered. Choose another one: /topup")


def stars_refused_account() -> str:
    return _("Open the bot with /start first, then pay again.")


def stars_refused_busy() -> str:
    return _("The service is busy right now. Please try to pay again in a minute.")


def creating_payment() -> str:
    return _("Creating the payment…")


def payment_link(credits: int, rubles: str) -> str:
    return ngettext(
        "Pay {rubles} ₽ to get {credits} credit:",
        "Pay {rubles} ₽ to get {credits} credits:",
        count(credits),
    ).format(rubles=rubles, credits=credits)


def pay_button(rubles: str) -> str:
    return _("💳 Pay {rubles} ₽").format(rubles=rubles)


def payment_received(credits: int, balance: Decimal) -> str:
    return ngettext(
        "✅ Payment received: +{credits} credit. Balance: {balance}.",
        "✅ Payment received: +{credits} credits. Balance: {balance}.",
        count(credits),
    ).format(credits=credits, balance=credits_amount(balance))


def payment_failed() -> str:
    return _("The payment did not go through. Nothing was charged.")


def weekly_bonus(amount: int, balance: Decimal) -> str:
    return ngettext(
        "🎁 Weekly bonus: +{amount} credit. Balance: {balance}.",
        "🎁 Weekly bonus: +{amount} credits. Balance: {balance}.",
        count(amount),
    ).format(amount=amount, balance=credits_amount(balance))


def history_jobs_title() -> str:
    return _("Recent images:")


def history_no_jobs() -> str:
    return _("No images yet.")


def job_status(status: str) -> str:
    return {
        "awaiting_payment": _("awaiting payment"),
        "waiting": _("waiting"),
        "dispatched": _("in the queue"),
        "queued": _("in the queue"),  # the seed's status, all a job from before us carries
        "processing": _("in progress"),
        "completed": _("done"),
        "failed": _("failed"),
        "canceled": _("canceled"),
    }.get(status, status)


def history_job(job_id: int, status: str, price: int, at: datetime) -> str:
    return ngettext(
        "#{job_id} · {status} · {price} credit · {date}",
        "#{job_id} · {status} · {price} credits · {date}",
        count(price),
    ).format(job_id=job_id, status=job_status(status), price=price, date=at.strftime("%d.%m %H:%M"))


def history_results_hint(days: int) -> str:
    return _("Results are kept for {days} days: tap one below to get it again.").format(days=days)


def history_credits_title() -> str:
    return _("Credits in and out:")


def history_credit(kind: str, credits: int, at: datetime) -> str:
    label = {
        "topup": _("top-up"),
        "bonus": _("weekly bonus"),
        "refund": _("refund"),
        "grant": _("gift"),
        "topup_refund": _("top-up refunded"),
        "adjustment": _("by support"),
    }.get(kind, kind)
    return f"{credits:+d} · {label} · {at.strftime('%d.%m %H:%M')}"


def topup_refunded(money: str, credits: int, shortfall: int, balance: Decimal | int) -> str:
    """`money`: what went back to the buyer, with its unit (`100.50 ₽`, `50 ⭐`)."""
    text = ngettext(
        "↩️ Your top-up was refunded: {money} back to you, {credits} credit taken back.",
        "↩️ Your top-up was refunded: {money} back to you, {credits} credits taken back.",
        count(credits),
    )
    if shortfall:
        text += " " + _("{shortfall} of its credits had been spent already.")
    text += " " + _("Balance: {balance}.")
    return text.format(
        money=money, credits=credits, shortfall=shortfall, balance=credits_amount(balance)
    )


def credits_adjusted(credits: int, balance: Decimal) -> str:
    if credits > 0:
        text = ngettext(
            "🛠 Support added {credits} credit to your balance. Balance: {balance}.",
            "🛠 Support added {credits} credits to your balance. Balance: {balance}.",
            count(credits),
        )
    else:
        text = ngettext(
            "🛠 Support took {credits} credit from your balance. Balance: {balance}.",
            "🛠 Support took {credits} credits from your balance. Balance: {balance}.",
            count(-credits),
        )
    return text.format(credits=abs(credits), balance=credits_amount(balance))


def nothing_to_cancel() -> str:
    return _("Nothing to cancel.")


def dialog_canceled() -> str:
    return _("Canceled. What shall we do?")


def choose_job_to_cancel() -> str:
    return _("Which one shall I cancel?")


def cancel_job_button(title: str) -> str:
    return _("✖️ Cancel «{title}»").format(title=title)


def cancel_requested() -> str:
    return _("Cancel requested.")


def cancel_too_early() -> str:
    return _("The job is still being created; try again in a moment.")


def already_finished() -> str:
    return _("This job is already finished.")


def stale_button() -> str:
    return _("This button is outdated. Open the menu again: /start")


def already_requested() -> str:
    return _("This job is already under way: its status is in the message above.")


def not_a_photo() -> str:
    return _("Please send a photo (JPEG, PNG or WebP), as a photo or as a file.")


def file_too_large(megabytes: int) -> str:
    return _("The file is too large: bots can download files up to {mb} MB.").format(mb=megabytes)


def too_many_pixels(megapixels: int) -> str:
    return ngettext(
        "The image is too large: at most {megapixels} megapixel.",
        "The image is too large: at most {megapixels} megapixels.",
        megapixels,
    ).format(megapixels=megapixels)


def unsupported_format() -> str:
    return _("This format is not supported. Please send JPEG, PNG or WebP.")


def damaged_image() -> str:
    return _("This image is damaged or incomplete: it cannot be opened. Please send it again.")


def heif_unsupported() -> str:
    return _("HEIC photos are not accepted. Send it as a photo (not as a file), or as JPEG or PNG.")


def prompt_too_long(length: int, limit: int) -> str:
    return ngettext(
        "The description is too long: {length} character, at most {limit}.",
        "The description is too long: {length} characters, at most {limit}.",
        length,
    ).format(length=length, limit=limit)


def caption_too_long(length: int, limit: int) -> str:
    return (
        prompt_too_long(length, limit)
        + "\n"
        + _("The photo is kept: send a shorter description of what to do with it.")
    )


def private_only() -> str:
    return _(
        "I work in private chats only, so that balances and payments stay private. "
        "Open a chat with me: the button below."
    )


def open_private_button() -> str:
    return _("💬 Open a private chat")


def flood() -> str:
    return _("Too many messages at once. Please wait a few seconds.")


def busy() -> str:
    return _("The service is busy right now. Please try again in a minute; nothing was charged.")


def error() -> str:
    return _("Something went wrong. Please try again; nothing was charged.")


def download_failed() -> str:
    return _("Could not download the file from Telegram. Please send it again.")


def unknown_input() -> str:
    return _("I did not understand that. Send a photo or open the menu: /start")


def stats(users: int, jobs_today: int, active: int, pending: int) -> str:
    return _(
        "Users: {users}\nJobs today: {jobs}\nIn progress: {active}\nMessages waiting: {pending}"
    ).format(users=users, jobs=jobs_today, active=active, pending=pending)


def broadcast_usage() -> str:
    return _("Usage: /broadcast <text>")


def broadcast_queued(count: int) -> str:
    return ngettext(
        "Broadcast queued for {count} chat.", "Broadcast queued for {count} chats.", count
    ).format(count=count)


def grant_usage() -> str:
    return _(
        "Usage: /grant <telegram_id> <credits> [reason]\n"
        "The Telegram id and the credits are positive whole numbers (credits at most "
        "{max_credits}); the reason, if any, at most {max_reason} characters."
    ).format(max_credits=GRANT_MAX_CREDITS, max_reason=GRANT_REASON_MAX_LENGTH)


def grant_requested(telegram_id: int, credits: int) -> str:
    return _("Grant of {credits} credits to {telegram_id} sent to billing.").format(
        credits=credits, telegram_id=telegram_id
    )


def grant_done(telegram_id: int, credits: int, balance: Decimal) -> str:
    return _("✅ {telegram_id} received {credits} credits. Their balance: {balance}.").format(
        telegram_id=telegram_id, credits=credits, balance=credits_amount(balance)
    )


def grant_refused_unknown(telegram_id: int, credits: int) -> str:
    return _(
        "❌ No account with Telegram id {telegram_id}: {credits} credits were not granted. "
        "The user has to /start the bot first."
    ).format(telegram_id=telegram_id, credits=credits)


def credits_granted(credits: int, balance: Decimal) -> str:
    return ngettext(
        "🎁 You received {credits} credit. Balance: {balance}.",
        "🎁 You received {credits} credits. Balance: {balance}.",
        count(credits),
    ).format(credits=credits, balance=credits_amount(balance))


def receipt_ask() -> str:
    return _(
        "🧾 By law (54-FZ) every payment comes with a receipt. Send the email or phone number "
        "to send it to: I will remember it for your next top-ups."
    )


def receipt_current(contact: str) -> str:
    return _(
        "🧾 Receipts go to {contact}. To change it, send another email or phone number."
    ).format(contact=contact)


def receipt_invalid() -> str:
    return _(
        "That is not an email or a phone number. Send, for example, name@example.com "
        "or +7 900 123-45-67."
    )


def receipt_saved(contact: str) -> str:
    return _("🧾 Receipts will go to {contact}.").format(contact=contact)


def receipt_button(contact: str) -> str:
    if contact:
        return _("🧾 Receipt: {contact}").format(contact=contact)
    return _("🧾 Email or phone for receipts")


def receipt_give_button() -> str:
    return _("🧾 Give an email or phone")


def receipt_missing() -> str:
    return _(
        "The payment needs a receipt (54-FZ), and I don't know where to send it. Give an "
        "email or phone number, and I will create the payment again."
    )

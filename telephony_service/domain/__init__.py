"""Pure domain rules: categories, statuses, business calendar, SLAs and phone numbers."""

"""Storage, images, lexicons, model staging and the Ray session: what every floor uses."""

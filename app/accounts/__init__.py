"""accounts: admin users. Password hashing and policy, server-side admin sessions (`admins`) and
the login throttle (`login_throttle`).

Owns: `AdminUser`, `AdminSession`, `LoginFailure` rows and the rules around them. May import:
`app.store`, `app.settings`. The web's cookie and CSRF handling on top of it is `app.web.auth`.
"""

"""The classic "JWT authentication in Flask" tutorial app, in the shape its readers built it.

Flask-SQLAlchemy's `User` model (table `user`: id, public_id, name, email, password, admin),
a `/user` route that signs users up with Werkzeug's `generate_password_hash`, `/login` with
HTTP Basic that answers a JWT, and routes that read it from `x-access-token`. Tests make real
tutorial databases with it, then import them into Passgate. `PASSWORD_METHOD` stands in for
the Werkzeug version the app ran on (each version had its own default; see
app/hash_formats.py); None is the installed Werkzeug's default.
"""

from __future__ import annotations

import datetime as dt
import uuid
from functools import wraps
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, make_response, request
from flask_sqlalchemy import SQLAlchemy
from jose import jwt
from werkzeug.security import check_password_hash, generate_password_hash

db = SQLAlchemy()


class User(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy's dynamic base
    id = db.Column(db.Integer, primary_key=True)
    public_id = db.Column(db.String(50), unique=True)
    name = db.Column(db.String(50))
    email = db.Column(db.String(70), unique=True)
    password = db.Column(db.String(80))
    admin = db.Column(db.Boolean, default=False)


def create_tutorial_app(database: Path, *, password_method: str | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "tutorial-secret"
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{database}"
    app.config["PASSWORD_METHOD"] = password_method
    db.init_app(app)

    def token_required(view: Any) -> Any:
        @wraps(view)
        def decorated(*args: Any, **kwargs: Any) -> Any:
            token = request.headers.get("x-access-token")
            if not token:
                return jsonify({"message": "Token is missing!"}), 401
            try:
                data = jwt.decode(token, app.config["SECRET_KEY"], algorithms=["HS256"])
            except Exception:  # the tutorial's own catch-all
                return jsonify({"message": "Token is invalid!"}), 401
            current_user = User.query.filter_by(public_id=data["public_id"]).first()
            return view(current_user, *args, **kwargs)

        return decorated

    @app.route("/user", methods=["POST"])
    def create_user() -> Any:
        data = request.get_json()
        method = app.config["PASSWORD_METHOD"]
        hashed = (
            generate_password_hash(data["password"])
            if method is None
            else generate_password_hash(data["password"], method=method)
        )
        user = User(
            public_id=str(uuid.uuid4()),
            name=data["name"],
            email=data["email"],
            password=hashed,
            admin=False,
        )
        db.session.add(user)
        db.session.commit()
        return jsonify({"message": "New user created!"})

    @app.route("/login")
    def login() -> Any:
        auth = request.authorization
        challenge = {"WWW-Authenticate": 'Basic realm="Login required!"'}
        if not auth or not auth.username or not auth.password:
            return make_response("Could not verify", 401, challenge)
        user = User.query.filter_by(email=auth.username).first()
        if not user or not check_password_hash(user.password, auth.password):
            return make_response("Could not verify", 401, challenge)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)
        token = jwt.encode(
            {"public_id": user.public_id, "exp": int(expires.timestamp())},
            app.config["SECRET_KEY"],
            algorithm="HS256",
        )
        return jsonify({"token": token})

    @app.route("/user", methods=["GET"])
    @token_required
    def get_all_users(current_user: User) -> Any:
        return jsonify(
            {"users": [{"public_id": u.public_id, "name": u.name} for u in User.query.all()]}
        )

    with app.app_context():
        db.create_all()
    return app


def _closed(app: Flask) -> None:
    # The database file is read by the import next: no connection of the app stays open.
    with app.app_context():
        db.engine.dispose()


def sign_up(app: Flask, *, name: str, email: str, password: str) -> None:
    """What a user of the tutorial app did: POST /user."""
    response = app.test_client().post(
        "/user", json={"name": name, "email": email, "password": password}
    )
    _closed(app)
    assert response.status_code == 200, response.get_data(as_text=True)


def log_in(app: Flask, *, email: str, password: str) -> int:
    """The tutorial's own login (HTTP Basic against /login): its status code."""
    status = app.test_client().get("/login", auth=(email, password)).status_code
    _closed(app)
    return status

"""Dashboard page modules (JavaScript); a package so the wheel ships them."""

"""The playground page's static files (index.html, app.js, app.css), served as they are by api/routes/web.py."""

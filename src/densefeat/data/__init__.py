"""Patient data: loading, subject-level splits and simple features (never imports models)."""

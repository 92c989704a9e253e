//! routerd settings: flags > environment > TOML file > defaults; node address autodetection.

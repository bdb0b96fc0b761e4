"""Certificate profiles: raw configuration turned into frozen, validated `Profile` objects."""
from ca.profiles.model import Profile, ProfileError, load_profiles, builtin_profiles  # noqa: F401

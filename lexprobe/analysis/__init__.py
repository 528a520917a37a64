"""Statistics: disambiguation performance, inflection detection, head discovery."""

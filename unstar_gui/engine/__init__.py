"""Qt-free core of UnStar Studio. Nothing under this package may import Qt."""

"""The node agent (`fleet agent`): keeps the models assigned to a GPU node in its disk cache."""

import json, sys
m = json.load(open(sys.argv[1]))
print(sorted(m))
print("config digest is the image ID:", m["containerimage.config.digest"] == open(sys.argv[2]).read())
print("digest is the descriptor's:", m["containerimage.digest"] == m["containerimage.descriptor"]["digest"])
print(m["containerimage.descriptor"]["mediaType"], m["image.name"])
print([b["ref"] for b in m["kiln.base-images"]])
